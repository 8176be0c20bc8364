# fish completion for gokku. Load it with: gokku completion fish | source (in
# ~/.config/fish/config.fish), or save it as ~/.config/fish/completions/gokku.fish.
#
# Each word is completed from what `gokku completion --words -- WORDS...` prints for the
# words before it: the commands the caller may run there, plugins' included, then the apps
# and services it may see where the command takes one; on the server when gokku is a
# client. The built-in verbs below stand in when it cannot answer; past the verb, where it
# offers nothing, the word completes as a file.
function __gokku_complete
    set -l before (commandline -opc)
    set -e before[1]
    set -l remote
    set -l typed
    set -l verb
    set -l skip 0
    for i in (seq (count $before))
        set -l word $before[$i]
        if test $skip = 1
            set skip 0
            continue
        end
        if test -z "$verb"
            switch $word
                case --remote
                    if test $i -lt (count $before)
                        set remote --remote $before[(math $i + 1)]
                        set skip 1
                        continue
                    end
                case '--remote=*'
                    set remote $word
                    continue
                case -a --app --format
                    if test $i -lt (count $before)
                        set -a typed $word $before[(math $i + 1)]
                        set skip 1
                        continue
                    end
                case '-*'
                case '*'
                    set verb $word
            end
        end
        set -a typed $word
    end
    set -l current (commandline -ct)
    if test -z "$verb"; and test "$before[-1]" = --remote
        git remote 2>/dev/null
    else if test -z "$verb"; and string match -q -- '-*' $current
        string split ' ' -- '@FLAGS@'
    else
        set -l found (gokku $remote completion --words -- $typed 2>/dev/null)
        if test (count $found) -gt 0
            printf '%s\n' $found
        else if test -z "$verb"
            string split ' ' -- '@VERBS@'
        else
            __fish_complete_path $current
        end
    end
end
complete -c gokku -f -a '(__gokku_complete)'
