# bash completion for gokku. Load it with: eval "$(gokku completion bash)" (in ~/.bashrc),
# or save it as /etc/bash_completion.d/gokku.
#
# The verb (the first word after the global flags) is completed from what
# `gokku completion --words` prints: the commands the caller may run there, plugins'
# included, on the server when gokku is a client. The built-in verbs below stand in when
# it cannot answer. The command's own arguments get bash's default (file) completion.
_gokku() {
    local line=${COMP_LINE:0:COMP_POINT}
    local piece=${COMP_WORDS[COMP_CWORD]}
    local -a parts remote=()
    read -ra parts <<<"$line"
    [[ $line == *[[:space:]] || -z $line ]] && parts+=("")
    local i=1 word
    while ((i < ${#parts[@]} - 1)); do
        word=${parts[i]}
        case $word in
        --remote) remote=(--remote "${parts[i + 1]}"); ((i += 2)); continue ;;
        --remote=*) remote=("$word") ;;
        -a | --app | --format) ((i += 2)); continue ;;
        -*) ;;
        *) return 1 ;; # past the verb: default completion
        esac
        ((i++))
    done
    # The word being completed, whole: bash splits "config:se" at the colon
    # (COMP_WORDBREAKS), and only the last piece is replaced by the reply.
    local full=${parts[${#parts[@]} - 1]} candidates
    if [[ ${parts[${#parts[@]} - 2]} == --remote ]]; then
        candidates=$(git remote 2>/dev/null)
    elif [[ $full == -* ]]; then
        candidates="@FLAGS@"
    else
        candidates=$(gokku "${remote[@]}" completion --words 2>/dev/null) || candidates="@VERBS@"
    fi
    local prefix=${full%"$piece"}
    local -a found
    mapfile -t found < <(compgen -W "$candidates" -- "$full")
    COMPREPLY=("${found[@]#"$prefix"}")
}
complete -o default -F _gokku gokku
