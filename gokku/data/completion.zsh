#compdef gokku
# zsh completion for gokku. Load it with: eval "$(gokku completion zsh)" (in ~/.zshrc,
# after compinit), or save it as _gokku in a directory of $fpath.
#
# Each word is completed from what `gokku completion --words -- WORDS...` prints for the
# words before it: the commands the caller may run there, plugins' included, then the apps
# and services it may see where the command takes one; on the server when gokku is a
# client. The built-in verbs below stand in when it cannot answer; past the verb, where it
# offers nothing, the word completes as a file.
_gokku() {
    local -a remote typed candidates
    local i=2 word verb=
    # The words before the one being completed, but --remote NAME (the client's, before
    # the verb), which picks the server to ask instead.
    while ((i < CURRENT)); do
        word=${words[i]}
        if [[ -z $verb ]]; then
            case $word in
            --remote) if ((i + 1 < CURRENT)); then remote=(--remote "${words[i + 1]}"); ((i += 2)); continue; fi ;;
            --remote=*) remote=("$word"); ((i++)); continue ;;
            -a | --app | --format) if ((i + 1 < CURRENT)); then typed+=("$word" "${words[i + 1]}"); ((i += 2)); continue; fi ;;
            -*) ;;
            *) verb=$word ;;
            esac
        fi
        typed+=("$word")
        ((i++))
    done
    if [[ -z $verb && ${words[CURRENT - 1]} == --remote ]]; then
        candidates=(${(f)"$(git remote 2>/dev/null)"})
    elif [[ -z $verb && $PREFIX == -* ]]; then
        candidates=(@FLAGS@)
    else
        candidates=(${(f)"$(gokku $remote completion --words -- $typed 2>/dev/null)"})
        if [[ -z $verb ]]; then
            ((${#candidates})) || candidates=(@VERBS@)
        elif ((!${#candidates})); then
            _files
            return
        fi
    fi
    compadd -- $candidates
}
if [[ $funcstack[1] == _gokku ]]; then
    _gokku "$@"
else
    compdef _gokku gokku
fi
