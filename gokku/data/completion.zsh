#compdef gokku
# zsh completion for gokku. Load it with: eval "$(gokku completion zsh)" (in ~/.zshrc,
# after compinit), or save it as _gokku in a directory of $fpath.
#
# The verb (the first word after the global flags) is completed from what
# `gokku completion --words` prints: the commands the caller may run there, plugins'
# included, on the server when gokku is a client. The built-in verbs below stand in when
# it cannot answer. The command's own arguments complete as files.
_gokku() {
    local -a remote candidates
    local i=2 word
    while ((i < CURRENT)); do
        word=${words[i]}
        case $word in
        --remote) remote=(--remote "${words[i + 1]}"); ((i += 2)); continue ;;
        --remote=*) remote=("$word") ;;
        -a | --app | --format) ((i += 2)); continue ;;
        -*) ;;
        *) _files; return ;;
        esac
        ((i++))
    done
    if [[ ${words[CURRENT - 1]} == --remote ]]; then
        candidates=(${(f)"$(git remote 2>/dev/null)"})
    elif [[ $PREFIX == -* ]]; then
        candidates=(@FLAGS@)
    else
        candidates=(${(f)"$(gokku $remote completion --words 2>/dev/null)"})
        ((${#candidates})) || candidates=(@VERBS@)
    fi
    compadd -- $candidates
}
if [[ $funcstack[1] == _gokku ]]; then
    _gokku "$@"
else
    compdef _gokku gokku
fi
