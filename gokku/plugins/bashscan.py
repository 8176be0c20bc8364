"""What of a Bash script is code that runs as written: enough of Bash's grammar to tell a
path the script uses from one it only mentions.

``plugins:validate`` looks for scripts that use ``/opt/gokku`` whatever GOKKU_ROOT is. A
grep cannot tell ``rm -rf /opt/gokku/services/$1`` from ``${GOKKU_ROOT:-/opt/gokku}`` (the
idiom that respects GOKKU_ROOT), from a comment, or from a help text printed with
``cat <<EOF``. ``code_only`` blanks those three out, keeping every other character (and
every newline) where it was, so a search of its result finds only real uses.

Quotes, ``$(...)``, backquotes, ``${...}`` and here-documents are followed as Bash reads
them; what is not understood is kept, so a script the scanner misreads is flagged rather
than let through.
"""

import re

# Variables Gokku always sets for a plugin script: a default for one of them is never used.
ROOT_VARIABLES = ("GOKKU_ROOT", "GOKKU_DIR")
DEFAULT_OPERATORS = (":-", ":=", "-", "=")
# Where a word starts: after these, '#' begins a comment.
_WORD_BREAKS = " \t\n;&|()<>"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A here-document printed for the user: `cat <<EOF` (to stdout or stderr, nothing after).
_PRINTED = re.compile(r"(?:^|[\s;{&|]|(?<!\$)\()cat\s*$")  # not $(cat: captured
_PRINTED_TAIL = re.compile(r"\s*(?:1?>&2)?\s*[;}]*\s*$")
_DELIMITER = re.compile(r"""-?[ \t]*(?:'([^'\n]*)'|"([^"\n]*)"|\\?([^\s;&|<>()'"]+))""")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.out = list(text)
        self.heredocs: list[tuple[str, bool, str]] = []  # delimiter, strip tabs, how

    def blank(self, start: int, end: int) -> None:
        for i in range(start, min(end, len(self.text))):
            if self.out[i] != "\n":
                self.out[i] = " "

    def code(self, i: int, close: str = "") -> int:
        """Code from ``i`` up to ``close`` (``)`` or a backquote; end of text when empty);
        the index after ``close``."""
        text = self.text
        depth = 0  # unquoted '(' inside $( ... ): `case` patterns aside, they pair up
        while i < len(text):
            c = text[i]
            if close and c == close and (close != ")" or depth == 0):
                return i + 1
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            if c == "\\":
                i += 2
            elif c == "'":
                i = self.single(i + 1)
            elif c == '"':
                i = self.double(i + 1, '"')
            elif c == "`" and close != "`":
                i = self.code(i + 1, "`")
            elif c == "$":
                i = self.dollar(i)
            elif c == "#" and (i == 0 or text[i - 1] in _WORD_BREAKS):
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                self.blank(i, end)
                i = end
            elif c == "<" and text.startswith("<<", i) and not text.startswith("<<<", i):
                i = self.heredoc_start(i)
            elif c == "\n":
                i = self.heredoc_bodies(i + 1)
            else:
                i += 1
        return i

    def single(self, i: int) -> int:
        end = self.text.find("'", i)
        return len(self.text) if end < 0 else end + 1

    def ansi_c(self, i: int) -> int:
        """``$'...'``: backslash escapes, no expansions."""
        while i < len(self.text) and self.text[i] != "'":
            i += 2 if self.text[i] == "\\" else 1
        return i + 1

    def double(self, i: int, close: str, quotes: bool = False) -> int:
        """Inside double quotes (``close`` '"'), or a here-document's body (``close`` empty):
        only backslashes and expansions are special. With ``quotes``, a word inside
        ``${...}`` up to its ``close``: quotes nest there too."""
        text = self.text
        while i < len(text):
            c = text[i]
            if close and c == close:
                return i + 1
            if c == "\\":
                i += 2
            elif quotes and c == "'":
                i = self.single(i + 1)
            elif quotes and c == '"':
                i = self.double(i + 1, '"')
            elif c == "$":
                i = self.dollar(i)
            elif c == "`":
                i = self.code(i + 1, "`")
            else:
                i += 1
        return i

    def dollar(self, i: int) -> int:
        text = self.text
        after = text[i + 1 : i + 2]
        if after == "(":
            return self.code(i + 2, ")")
        if after == "{":
            return self.parameter(i + 2)
        if after == "'":
            return self.ansi_c(i + 2)
        return i + 2 if after and not after.isspace() else i + 1  # $#, $1, $$, $VAR's $

    def parameter(self, i: int) -> int:
        """``${...}``; a default for GOKKU_ROOT or GOKKU_DIR is blanked: it never applies."""
        name = _NAME.match(self.text, i)
        operator = ""
        if name:
            rest = self.text[name.end() : name.end() + 2]
            operator = next((op for op in DEFAULT_OPERATORS if rest.startswith(op)), "")
        end = self.double(i, "}", quotes=True)
        if name and name.group() in ROOT_VARIABLES and operator:
            self.blank(name.end() + len(operator), end - 1)
        return end

    def heredoc_start(self, i: int) -> int:
        """``<<WORD`` or ``<<-WORD``: its body starts on the next line. A body printed with
        ``cat`` is text for the user; a quoted delimiter's body is kept as it is."""
        text = self.text
        found = _DELIMITER.match(text, i + 2)
        if not found:
            return i + 2
        delimiter = next(g for g in found.groups() if g is not None)
        line_start = text.rfind("\n", 0, i) + 1
        line_end = text.find("\n", found.end())
        line_end = len(text) if line_end < 0 else line_end
        printed = _PRINTED.search(text[line_start:i]) and _PRINTED_TAIL.fullmatch(
            text[found.end() : line_end]
        )
        quoted = found.group(3) is None or text[found.start(3) - 1] == "\\"
        how = "printed" if printed else "literal" if quoted else "expanded"
        self.heredocs.append((delimiter, text[i + 2] == "-", how))
        return found.end()

    def heredoc_bodies(self, i: int) -> int:
        """The bodies of the here-documents begun on the line that just ended."""
        text = self.text
        pending, self.heredocs = self.heredocs, []
        for delimiter, strip_tabs, how in pending:
            start = i
            while i < len(text):
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                line = text[i:end]
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    body_end, i = i, min(end + 1, len(text))
                    break
                i = end + 1
            else:
                body_end = i = len(text)
            if how == "printed":
                self.blank(start, body_end)
            elif how == "expanded":
                self.double_body(start, body_end)
        return i

    def double_body(self, start: int, end: int) -> None:
        """An unquoted here-document's body: expansions are followed, up to its end."""
        body = _Scanner(self.text[:end])
        body.double(start, "")
        self.out[start:end] = body.out[start:end]


def code_only(text: str) -> str:
    """``text`` with comments, defaults of GOKKU_ROOT/GOKKU_DIR and printed here-documents
    blanked out (same length, newlines kept)."""
    scanner = _Scanner(text)
    try:
        scanner.code(0)
    except RecursionError:  # thousands of nested $(: read as it is, so nothing is let through
        return text
    return "".join(scanner.out)
