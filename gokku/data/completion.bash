# bash completion for gokku. Load it with: eval "$(gokku completion bash)" (in ~/.bashrc),
# or save it as /etc/bash_completion.d/gokku.
#
# Each word is completed from what `gokku completion --words -- WORDS...` prints for the
# words before it: the commands the caller may run there, plugins' included, then the apps
# and services it may see where the command takes one; on the server when gokku is a
# client. The built-in verbs below stand in when it cannot answer; past the verb, where it
# offers nothing, bash's default (file) completion takes over.
_gokku() {
    local line=${COMP_LINE:0:COMP_POINT}
    local piece=${COMP_WORDS[COMP_CWORD]}
    local -a parts remote=() typed=()
    read -ra parts <<<"$line"
    [[ $line == *[[:space:]] || -z $line ]] && parts+=("")
    local n=${#parts[@]} i=1 word verb=
    # The words before the one being completed, but --remote NAME (the client's, before
    # the verb), which picks the server to ask instead.
    while ((i < n - 1)); do
        word=${parts[i]}
        if [[ -z $verb ]]; then
            case $word in
            --remote) if ((i + 2 < n)); then remote=(--remote "${parts[i + 1]}"); ((i += 2)); continue; fi ;;
            --remote=*) remote=("$word"); ((i++)); continue ;;
            -a | --app | --format) if ((i + 2 < n)); then typed+=("$word" "${parts[i + 1]}"); ((i += 2)); continue; fi ;;
            -*) ;;
            *) verb=$word ;;
            esac
        fi
        typed+=("$word")
        ((i++))
    done
    # The word being completed, whole: bash splits "config:se" at the colon
    # (COMP_WORDBREAKS), and only the last piece is replaced by the reply.
    local full=${parts[n - 1]} candidates
    if [[ -z $verb && ${parts[n - 2]} == --remote ]]; then
        candidates=$(git remote 2>/dev/null)
    elif [[ -z $verb && $full == -* ]]; then
        candidates="@FLAGS@"
    elif [[ -z $verb ]]; then
        candidates=$(gokku "${remote[@]}" completion --words -- "${typed[@]}" 2>/dev/null) ||
            candidates="@VERBS@"
    else
        candidates=$(gokku "${remote[@]}" completion --words -- "${typed[@]}" 2>/dev/null)
        [[ -n $candidates ]] || return 1 # default (file) completion
    fi
    local prefix=${full%"$piece"}
    local -a found
    mapfile -t found < <(compgen -W "$candidates" -- "$full")
    COMPREPLY=("${found[@]#"$prefix"}")
}
complete -o default -F _gokku gokku
