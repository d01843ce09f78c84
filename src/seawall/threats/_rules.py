"""The detection rules: one compiled pattern each, with an id, a kind and a level.

Patterns run on text that :func:`seawall.threats._decode.normalize` decoded
and lower-cased. Every pattern is written so that it cannot backtrack
catastrophically: no unbounded quantifier inside another quantifier, gaps
between tokens bounded (``.{0,80}?``), and the test suite checks both the
parsed pattern (star height) and its time on 100 KB adversarial inputs.

Levels work like OWASP CRS paranoia levels: level 1 rules are specific
(few false positives), higher levels add broader rules that catch more and
misfire more; a detector at level *n* runs every rule of level <= *n*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KINDS", "RULES", "SHELL_CMDS", "SHELL_WORDS", "TRIGGER_WORDS", "Rule"]

KINDS = ("sqli", "xss", "traversal", "cmdi")


@dataclass(frozen=True, slots=True)
class Rule:
    """A detection rule: *id* (reported in problems and stats), *kind*, *level*, *pattern*."""

    id: str
    kind: str
    level: int
    pattern: re.Pattern[str]
    description: str
    #: The rule can only match text containing one of these substrings: a
    #: C-speed ``in`` test skips the regex for most values.
    needs: tuple[str, ...] = ()
    #: Function names that match when called (``name(``): one shared scan for
    #: ``word(`` is much cheaper than a long alternation per rule.
    calls: frozenset[str] = frozenset()


_QUOTES = ("'", '"', "`", "\u00b4", "\u2019")


def _r(
    rule_id: str,
    kind: str,
    level: int,
    pattern: str,
    description: str,
    needs: tuple[str, ...] = (),
    calls: str = "",
) -> Rule:
    # Patterns are written with a plain space for "one white-space character":
    # normalized text has runs of blanks folded to one, but keeps newlines.
    compiled = re.compile(pattern.replace(" ", r"\s"))
    return Rule(rule_id, kind, level, compiled, description, needs, frozenset(calls.split()))


# Building blocks (all bounded).
_Q = r"['\"`\u00b4\u2019]"  # quote characters that close a SQL string
_KW_BOOL = r"(?:or|and|xor|\|\||&&|div|having|not)"
# Any function call: after a closed quote and an operator, a call is SQL
# whatever its name (one charset test, not a 70-name alternation).
_ANY_CALL = r"[a-z_][\w.]{0,30} ?\("
_SQL_FUNCS = (
    r"(?:sleep|benchmark|pg_sleep|load_file|extractvalue|updatexml|group_concat|concat_ws|"
    r"concat|char|chr|nchar|ascii|ord|hex|unhex|substring|substr|mid|length|len|version|"
    r"database|schema|user|current_user|system_user|session_user|count|cast|convert|"
    r"if|ifnull|isnull|coalesce|exp|floor|rand|md5|sha1|name_const|row|elt|make_set|"
    r"utl_inaddr\.get_host_address|dbms_pipe\.receive_message|ctxsys\.drithsx\.sn|"
    r"xp_cmdshell|sp_executesql|exec|execute|pi|now|sysdate|last_insert_id|"
    r"json_extract|instr|locate|position|least|greatest|decode|bin|oct|aes_decrypt|"
    r"aes_encrypt|compress|uncompress|from_base64|to_base64|table_name|column_name)"
)

# A SQL operand: a number, a quoted word, an identifier or a variable.
_OPERAND = (
    r"(?:-?\d{1,20}(?:\.\d{1,20})?|"
    + _Q
    + r"[^'\"`]{0,30}"
    + _Q
    + r"|[a-z_][\w.]{0,30}|@@?\w{1,30})"
)
# Arithmetic or bitwise operators between literals ('' - '', 1 ^ 1): an expression
# where a value was expected, as in ' OR ''-'.
_LITERAL_ARITH = r"(?:" + _Q + r"[^'\"`]{0,30}" + _Q + r"|\d{1,20}) ?[-+*/%^&|] ?(?:" + _Q + r"|\d)"
# A CSS colour after "#" ("#d860a7"): a value, not a MySQL comment.
_HEX_COLOUR = r"[0-9a-f]{8}\b|[0-9a-f]{6}\b|[0-9a-f]{3}\b"
_CMP = (
    r"(?:=|<>|!=|<=>|>=|<=|<|>| like\b| regexp\b| rlike\b| is (?:not )?null\b| in ?\(| between\b)"
)
# Shell commands that are not also common English words.
SHELL_CMDS = (
    r"(?:whoami|uname|ls|ping|nc|ncat|netcat|curl|wget|bash|sh|zsh|ksh|csh|cmd|cmd\.exe|"
    r"powershell|pwsh|nslookup|ifconfig|ipconfig|netstat|netsh|systeminfo|tasklist|perl|"
    r"python\d?|ruby|php|telnet|tftp|chmod|chown|xterm|nohup|wmic|certutil|bitsadmin|mshta|"
    r"rundll32|regsvr32|cscript|wscript|traceroute|tracert|crontab|useradd|sudo|phpinfo|"
    r"pwd|sysinfo|gcc|ifup|ifdown|iptables|nmap|msfconsole|socat)"
)
# Words that are shell commands and English words: they count only with
# shell-looking arguments after them.
SHELL_WORDS = (
    r"(?:cat|which|route|id|echo|sleep|set|find|type|net|env|export|head|tail|kill|rm|cp|mv|"
    r"touch|dir|ps|host|dig|grep|awk|sed|more|exec|eval|expr|timeout|su|passwd|ftp|ssh|scp|"
    r"node|base64|reg|whois)"
)
SHELL_ARGS = (
    r"(?: ?$| "
    + SHELL_CMDS
    + r"\b| ?[;|&`)]| -{1,2}[a-z]| [/\\$'\"]| \d| [a-z]:\\| \w{1,20} /[a-z]|"
    r" (?:user|localgroup|view|share|use)\b)"
)

#: Words that can start a match in text without any special character: the
#: detector skips plain text that has none of them (the test suite checks that
#: no corpus line matching a rule is skipped).
_TRIGGER_TEXT = """
    union select order group procedure limit having waitfor into insert delete update drop
    create alter truncate declare passwd htaccess htpasswd shadow inetpub winnt windows
    global boot win system php httpd web etc proc var ssh information_schema sysobjects
    syscolumns pg_catalog pg_shadow sqlite_master all_tables user_tables msysaccessobjects
    xp_cmdshell sp_password load into ini asa config conf htaccess bash_history sam
    whoami uname ls ping nc ncat netcat curl wget bash sh zsh ksh csh cmd powershell pwsh
    nslookup ifconfig ipconfig netstat netsh systeminfo tasklist perl python python2 python3
    ruby telnet tftp chmod chown xterm nohup wmic certutil bitsadmin mshta rundll32 regsvr32
    cscript wscript traceroute tracert crontab useradd sudo phpinfo pwd sysinfo gcc ifup
    ifdown iptables nmap msfconsole socat
    cat which route id echo sleep set find type net env export head tail kill rm cp mv touch
    dir ps host dig grep awk sed more exec eval expr timeout su ftp scp node base64 reg whois
"""
TRIGGER_WORDS = frozenset(_TRIGGER_TEXT.split())

RULES: tuple[Rule, ...] = (
    # -- SQL injection ---------------------------------------------------------
    _r(
        "sqli-union",
        "sqli",
        1,
        r"union(?: (?:all|distinct))? ?\({0,5} ?select\b",
        "UNION SELECT",
        ("union",),
    ),
    _r(
        "sqli-select-from",
        "sqli",
        1,
        r"select\b[^;]{0,100}?\bfrom ?(?:\(|[\w@#$`\[\"]{1,64}\b ?(?:\)|--|#|/\*|;|where\b|"
        r"limit\b|order\b|group\b|union\b|into\b|$|,|\.|join\b))",
        "SELECT ... FROM a table",
        ("select",),
    ),
    _r(
        "sqli-select-func",
        "sqli",
        1,
        r"select\b ?(?:\*|(?:top \d{1,20} )?"
        + _SQL_FUNCS
        + r" ?\(|@@|null\b|\d{1,20} ?(?:,|from\b|--|#|$)|"
        r"0x[0-9a-f]{2}|case\b|if ?\(|distinct\b|all\b)",
        "SELECT of a function, a variable or a constant",
        ("select",),
    ),
    _r("sqli-subquery", "sqli", 1, r"\( ?select\b", "a sub-query: (SELECT", ("select",)),
    _r(
        "sqli-string-bool",
        "sqli",
        1,
        _Q
        + r" ?\){0,5} ?"
        + _KW_BOOL
        + r"\b ?(?:not )?\({0,5} ?(?:"
        + _OPERAND
        + r" ?\){0,5} ?"
        + _CMP
        + r"|-?\d{1,20} ?(?:--|#|;|\)|$)|"
        + _LITERAL_ARITH
        + r"|"
        + _ANY_CALL
        + r"|(?:true|false|null|exists|select)\b)",
        "a quote closed, then a boolean operator and a comparison (' OR 1=1)",
        _QUOTES,
    ),
    _r(
        "sqli-string-op",
        "sqli",
        1,
        _Q + r" ?\){0,5} ?(?:=|<>|!=|<=>|>=|<=| ?like\b| ?regexp\b| ?rlike\b| ?between\b| ?in ?\(|"
        r"\+ ?\(|\|\|| ?is (?:not )?null\b| ?sounds like\b)"
        r" ?\({0,5} ?(?:" + _Q + r"[^\s'\"]|\d|@|" + _ANY_CALL + r"|select\b|null\b|true\b|"
        r"false\b)",
        "a quote closed, then a comparison ('a'='a)",
        _QUOTES,
    ),
    _r(
        "sqli-string-terminator",
        "sqli",
        1,
        _Q + r" ?\){0,5} ?(?:; ?(?:--|#|/\*)|-- ?$|-- |#(?!\d|" + _HEX_COLOUR + r")|/\*|%00)",
        "a quote closed, then a statement end or a comment",
        _QUOTES,
    ),
    _r(
        "sqli-string-keyword",
        "sqli",
        1,
        _Q + r" ?\){0,5} ?(?:;|\b)? ?(?:select\b[^;]{0,80}?\bfrom\b|insert into\b|"
        r"update \w{1,40} set\b|"
        r"delete from\b|drop (?:table|database)\b|exec(?:ute)? ?[(\w@]|declare @|"
        r"waitfor (?:delay|time)\b|having \d|order by \d|group by [\w`]{1,30} ?(?:--|#|$|having\b|"
        r"\))|procedure analyse|limit \d|into (?:out|dump)file|shutdown\b|begin declare|goto \w)",
        "a quote closed, then a SQL clause",
        _QUOTES,
    ),
    _r(
        "sqli-number-bool",
        "sqli",
        1,
        r"\d(?:\){1,5} ?| )(?:"
        + _KW_BOOL
        + r"|like|rlike|regexp)\b ?(?:not )?\({0,5} ?(?:"
        + _OPERAND
        + r" ?\){0,5} ?"
        + _CMP
        + r"|"
        + _ANY_CALL
        + r"|(?:true|false|null|exists|select)\b)",
        "a number, then a boolean operator and a comparison (1 AND 1=1)",
    ),
    _r(
        "sqli-bool-leading",
        "sqli",
        1,
        r"^ ?\){0,5} ?(?:or|and|xor|\|\||&&) ?\({0,5} ?(?:"
        + _OPERAND
        + r" ?(?:=|<>|!=|<=>|>=|<=|<|>| like\b) ?\(? ?"
        + _OPERAND
        + r"|true\b|false\b) ?\){0,5} ?(?:--|#|;|$)",
        "a value that is a boolean operator and a tautology (OR 1=1--)",
        ("or", "and", "||", "&&"),
    ),
    _r(
        "sqli-number-keyword",
        "sqli",
        1,
        r"\d\){0,5} ?(?:order by \d|group by [\w`]{1,30} ?(?:--|#|$|having\b|\))|"
        r"procedure analyse|"
        r"limit \d{1,20} ?(?:,|offset|--|#|$)|into (?:out|dump)file|having \d|"
        r"waitfor (?:delay|time))",
        "a number, then a SQL clause (1 ORDER BY 3)",
        ("order", "group", "procedure", "limit", "into", "having", "waitfor"),
    ),
    _r(
        "sqli-stacked",
        "sqli",
        1,
        r";\s?(?:select\b|insert into\b|update \w{1,40} set\b|delete from\b|drop \w{1,20}\b|"
        r"create (?:table|user|database|procedure|function)\b|alter (?:table|user)\b|"
        r"truncate\b|exec(?:ute)? ?(?:[(@]|(?:master|xp_|sp_|dbo|sys)\w{0,40}|"
        r"\w{1,40} ?(?:$|[;,('\"@#]|--))|"
        r"declare @|shutdown\b|waitfor (?:delay|time)\b|"
        r"grant \w|revoke \w|begin (?:declare|exec)|set @|if ?\(|call \w{1,40} ?\()",
        "a statement after a semicolon",
        (";",),
    ),
    _r(
        "sqli-blind-extract",
        "sqli",
        1,
        r"\b(?:ascii|ord|hex|unicode|length|char_length|len) ?\( ?\(? ?(?:substring|substr|mid|"
        r"left|right|select)\b ?\(?",
        "a character of a value extracted for blind inference (ASCII(SUBSTRING(...)))",
        ("(",),
    ),
    _r(
        "sqli-exec-proc",
        "sqli",
        1,
        r"\bexec(?:ute)? ?\(? ?(?:master\.{1,2}(?:dbo\.)?)?(?:xp|sp)_\w",
        "EXEC of a system stored procedure (xp_..., sp_...)",
        ("exec",),
    ),
    _r(
        "sqli-comment-end",
        "sqli",
        1,
        r"null\s?(?:--(?: |$)|#$|/\*$)|\)\s?;\s?--",
        "a value closed and the rest commented out",
        ("null", ";"),
    ),
    _r(
        "sqli-function",
        "sqli",
        1,
        r"waitfor (?:delay|time) ?'",
        "a SQL function typical of injections",
        ("waitfor",),
        calls="sleep benchmark pg_sleep load_file extractvalue updatexml group_concat "
        "concat_ws xp_cmdshell sp_executesql utl_inaddr.get_host_address "
        "dbms_pipe.receive_message name_const make_set",
    ),
    _r(
        "sqli-catalog",
        "sqli",
        1,
        r"(?:information_schema|mysql\.user|sysobjects|syscolumns|sys\.tables|"
        r"pg_catalog|pg_shadow|sqlite_master|all_tables|user_tables|msysaccessobjects|"
        r"xp_cmdshell|sp_password|@@version|@@datadir|@@hostname)\b",
        "a database catalog or system variable",
        (
            "information_schema",
            "mysql.",
            "sys",
            "pg_",
            "sqlite",
            "_tables",
            "msys",
            "xp_",
            "sp_",
            "@@",
        ),
    ),
    _r(
        "sqli-hex-char",
        "sqli",
        2,
        r"(?:char|chr|nchar) ?\( ?\d{1,3} ?(?:,|\+|\))|0x[0-9a-f]{8}",
        "CHAR(n) or a long hex literal",
        ("ch", "0x"),
    ),
    _r(
        "sqli-into-file",
        "sqli",
        1,
        r"into (?:out|dump)file\b|load data (?:local )?infile\b",
        "reading or writing files from SQL",
        ("into", "load"),
    ),
    _r(
        "sqli-ddl",
        "sqli",
        2,
        r"(?:drop|create|alter|truncate) (?:table|database|schema|user|procedure|function|view)"
        r" [\w`\"\[]",
        "a DDL statement",
        ("drop", "create", "alter", "truncate"),
    ),
    _r(
        "sqli-dml",
        "sqli",
        2,
        r"insert into [\w`\"\[.]{1,64} ?(?:\(|values\b|select\b)|"
        r"delete from [\w`\"\[.]{1,64}|update [\w`\"\[.]{1,64} set [\w`\"\[.]{1,64} ?=",
        "an INSERT, UPDATE or DELETE statement",
        ("insert", "delete", "update"),
    ),
    _r(
        "sqli-tautology-bare",
        "sqli",
        3,
        r"(?:or|and) ?\(? ?(\d{1,9}|'\w{0,20}'|\"\w{0,20}\") ?(?:=|like) ?\1\b",
        "a tautology (or 1=1) without a closing quote before it",
        ("=", "like"),
    ),
    _r(
        "sqli-keyword-pair",
        "sqli",
        3,
        r"(?:select|union|insert|update|delete|drop|exec|declare)\b.{0,60}?"
        r"\b(?:from|where|into|values|set|table|@)\b",
        "two SQL keywords close together",
    ),
    _r(
        "sqli-quote-any",
        "sqli",
        4,
        _Q + r" ?(?:or|and|;|--|#|\))",
        "a quote followed by an operator or terminator",
        _QUOTES,
    ),
    # -- cross-site scripting -------------------------------------------------
    _r("xss-script-tag", "xss", 1, r"<\s?/?\s?script\b|<\s?script[\s/>]", "a <script> tag", ("<",)),
    _r(
        "xss-dangerous-tag",
        "xss",
        1,
        r"<\s?/?(?:iframe|frame|frameset|object|embed|applet|meta|link|base|svg|math|xml|"
        r"import|isindex|xss|template|portal|set|animate|handler|listener|style|layer|"
        r"bgsound|xmp|plaintext|noscript|noembed)\b",
        "an HTML tag that can run script or load a resource",
        ("<",),
    ),
    _r(
        "xss-event-handler",
        "xss",
        1,
        r"o(?<![\w-]o)n(?:abort|activate|after\w{0,20}|animation\w{0,10}|before\w{0,20}|"
        r"begin|blur|bounce|cellchange|change|click|contextmenu|control\w{0,10}|copy|cut|"
        r"data\w{0,20}|dblclick|drag\w{0,5}|drop|end|error\w{0,10}|filterchange|finish|"
        r"focus\w{0,3}|hashchange|help|input|invalid|key\w{0,5}|layoutcomplete|load\w{0,10}|"
        r"losecapture|media\w{0,10}|message|mouse\w{0,10}|move\w{0,10}|offline|online|"
        r"page\w{0,5}|paste|pointer\w{0,10}|popstate|progress|propertychange|readystatechange|"
        r"repeat|reset|resize\w{0,3}|resume|reverse|row\w{0,10}|scroll|search|seek|select\w{0,6}|"
        r"show|start|stop|storage|submit|suspend|sync\w{0,10}|timeerror|toggle|touch\w{0,6}|"
        r"track|transition\w{0,10}|unload|urlflip|wheel|zoom)\s?=",
        "an event-handler attribute (onerror=...)",
        ("=",),
    ),
    _r(
        "xss-js-uri",
        "xss",
        1,
        r"(?:javascript|vbscript|livescript|mocha|jscript)\s?:|data\s?:\s?(?:text/html|"
        r"image/svg|application/(?:x-)?(?:javascript|ecmascript|xhtml))",
        "a javascript:, vbscript: or data: URI",
        (":",),
    ),
    _r(
        "xss-js-sink",
        "xss",
        1,
        r"(?:alert|prompt|confirm|eval)`|document ?\. ?(?:cookie|write|domain|location)|"
        r"window ?\. ?(?:location|name|open)|\.innerhtml ?=|function ?\( ?\) ?\{|"
        r"\[ ?['\"]constructor['\"]",
        "a JavaScript call typical of injected script",
        ("`", "document", "window", "innerhtml", "function", "constructor"),
        calls="alert prompt confirm eval settimeout setinterval msgbox execscript "
        "fromcharcode atob constructor",
    ),
    _r(
        "xss-css-expression",
        "xss",
        1,
        r"expression\s?\(|-moz-binding\s?:|behavior\s?:\s?url|@import\b|"
        r"url\s?\(\s?['\"]?\s?(?:javascript|vbscript|data):",
        "script inside CSS",
        ("expression", "binding", "behavior", "@import", "url"),
    ),
    _r(
        "xss-tag-attribute",
        "xss",
        1,
        r"<\s?/?(?:a|img|image|body|html|form|button|input|textarea|video|audio|source|"
        r"details|marquee|div|table|td|x|p|span|select|option|keygen|object|embed)\b"
        r"[^<>]{0,300}?(?:(?:src|href|action|formaction|xlink:href|data|code|background|dynsrc|"
        r"lowsrc|poster|srcdoc) ?= ?[\"'`]? ?(?:javascript|vbscript|data|[a-z]{0,10}script)|"
        r"style ?= ?[\"'`]?[^\"'`<>]{0,200}?(?:expression|behavior|javascript|url\())",
        "an HTML tag with a script URL or a script-bearing style",
        ("<",),
    ),
    _r(
        "xss-xml-entity",
        "xss",
        1,
        r"<!entity|<!doctype[^<>]{0,200}?\b(?:system|public)\b|<\?xml-stylesheet|<xsl:",
        "an XML entity, external DTD or stylesheet (XXE)",
        ("<!", "<?", "<xsl"),
    ),
    _r(
        "xss-html-comment-cdata",
        "xss",
        2,
        r"<!\[cdata\[|<!--[^<>]{0,200}?(?:<|script|-->)|<\?xml|<!doctype|<!entity",
        "CDATA sections, comments with markup, XML declarations",
        ("<",),
    ),
    _r(
        "xss-any-tag",
        "xss",
        2,
        r"<[a-z][a-z0-9:-]{0,30}[\s/][^<>=]{0,300}=|<[a-z][a-z0-9:-]{0,30}>",
        "any HTML tag",
        ("<",),
    ),
    _r(
        "xss-attribute-break",
        "xss",
        2,
        r"[\"'`]\s?(?:/?>|\s(?:on[a-z]{3,30}|style|src|href)\s?=)",
        "a quote closing an attribute, then markup",
        _QUOTES,
    ),
    # -- path traversal -------------------------------------------------------
    _r(
        "traversal-dotdot",
        "traversal",
        1,
        r"(?<!\.)\.{2,10} ?(?:[/\\;%\x00-\x1f\ue000-\uf8ff\u2215\u2216]|0x)|[/\\\x1c]\.\.$",
        "a parent-directory step (../)",
        ("..",),
    ),
    _r(
        "traversal-sensitive-file",
        "traversal",
        1,
        r"etc(?:[^\w\s]|%[0-9a-z]{2}){1,4}(?:passwd|shadow|group|hosts|issue|motd|crontab|sudoers|"
        r"fstab|profile|hostname|resolv\.conf|ssh)|boot\.ini\b|win\.ini\b|system\.ini\b|"
        r"windows(?:[^\w\s]|%[0-9a-z]{2}){1,4}(?:system32|win\.ini|repair)|"
        r"winnt(?:[^\w\s]|%[0-9a-z]{2}){1,4}|"
        r"proc[^\w\s]{1,4}(?:self|\d{1,10})[^\w\s]{1,4}|global\.asa\b|web\.config\b|"
        r"\.htaccess\b|\.htpasswd\b|web-inf\b|\.ssh[^\w\s]{1,4}(?:id_|authorized)|"
        r"var[^\w\s]{1,4}log[^\w\s]|inetpub\b|php\.ini\b|httpd\.conf\b|"
        r"\.bash_history\b|wp-config\.php\b",
        "a well-known sensitive file",
    ),
    _r(
        "traversal-encoded",
        "traversal",
        1,
        r"%(?:25){0,4}(?:2e|c0%ae|c0%2e|e0%80%ae|f0%80%80%ae|f8%80%80%80%ae|u002e|uff0e|u2216|"
        r"u2215|c0%af|c1%9c|c1%af|c0%5c|e0%80%af|%32%65|%35%63)",
        "an encoded dot or separator that survived decoding",
        ("%",),
    ),
    _r(
        "traversal-wrapper",
        "traversal",
        1,
        r"\b(?:php|phar|zip|expect|glob|compress\.zlib|compress\.bzip2)://",
        "a PHP stream wrapper (php://filter, phar://): file inclusion",
        ("://",),
    ),
    _r(
        "traversal-absolute",
        "traversal",
        2,
        r"^(?:[a-z]:[/\\]|[/\\]{2}[\w.]|file:|/(?:etc|proc|var|usr|root|home|windows|boot|dev)/)",
        "an absolute path or file: URL",
    ),
    _r(
        "traversal-dotdot-loose",
        "traversal",
        2,
        r"\.\.(?:[^\w\s.]|$)|\.{3}",
        "two dots followed by any separator",
        ("..",),
    ),
    # -- command injection ----------------------------------------------------
    _r(
        "cmdi-chained-command",
        "cmdi",
        1,
        r"(?:[;|&`\n]|\$\(|^['\"])\s?(?:[\w./-]{0,40}/)?(?:"
        + SHELL_CMDS
        + r"(?![\w'\u2019])|"
        + SHELL_WORDS
        + r"\b(?!['\u2019])"
        + SHELL_ARGS
        + r")",
        "a shell command after a command separator",
        (";", "|", "&", "`", "\n", "$(", "'", '"'),
    ),
    _r(
        "cmdi-subshell",
        "cmdi",
        1,
        r"\$\([^()]{1,200}\)|`[^`]{1,200}`|\$\{[^{}]{1,200}\}|\$\{?ifs\b",
        "command substitution ($(...), `...`, ${...})",
        ("$", "`"),
    ),
    _r(
        "cmdi-path-binary",
        "cmdi",
        1,
        r"/(?:usr/)?(?:local/)?s?bin/[a-z]|c:\\windows\\system32\\|"
        r"cmd(?:\.exe)? ?/[ck]\b|powershell(?:\.exe)? -",
        "a shell binary called by its path",
        ("bin/", "windows", "cmd", "powershell"),
    ),
    _r(
        "cmdi-code-exec",
        "cmdi",
        1,
        r"<\?php|<%=?|<!-- ?# ?(?:exec|include|echo|config)\b|"
        r"\{\{[^{}]{0,80}\}\}|\$\{\{|\$_(?:get|post|request|cookie|server|files)\b",
        "server-side code execution (system(), <?php, SSI, templates)",
        ("<", "{", "$_"),
        calls="system exec shell_exec passthru popen proc_open pcntl_exec assert phpinfo "
        "phpversion php_uname eval include require include_once require_once os.system "
        "os.popen subprocess.call subprocess.run subprocess.popen subprocess.check_output "
        "runtime.getruntime file_get_contents base64_decode create_function call_user_func "
        "str_rot13 __import__",
    ),
    _r(
        "cmdi-leading-command",
        "cmdi",
        1,
        r"^ ?(?:" + SHELL_CMDS + r"(?: -{1,2}[a-z]| [/\\]| https?://| [a-z]:\\| \d{1,3}\.\d| "
        r"firewall\b)|" + SHELL_WORDS + r" (?:-{1,2}[a-z]|/[a-z]|[a-z]:\\|"
        r"(?:user|localgroup|view|share|use)\b)|(?:whoami|uname|ifconfig|ipconfig|netstat|"
        r"systeminfo|tasklist|phpinfo) ?$)",
        "a value that is a shell command line",
    ),
    _r(
        "cmdi-shellshock",
        "cmdi",
        1,
        r"\(\) ?\{ ?[:\w]{0,10} ?; ?\} ?;",
        "a bash function definition (Shellshock)",
        ("{",),
    ),
    _r(
        "cmdi-windows-env",
        "cmdi",
        1,
        r"%(?:systemroot|windir|comspec|userprofile|programfiles|appdata|temp)%|"
        r"hklm\\|hkey_(?:local_machine|current_user)",
        "a Windows environment variable or registry hive",
        ("%", "hk"),
    ),
    _r(
        "cmdi-unix-command",
        "cmdi",
        2,
        r"^ ?(?:" + SHELL_CMDS + r"|" + SHELL_WORDS + r")(?: |$)",
        "a value that starts with a shell command",
    ),
    _r(
        "cmdi-redirect",
        "cmdi",
        2,
        r"(?:>{1,2}|<) ?(?:/|[\w.-]{1,64}\.(?:php|jsp|asp|aspx|sh|txt|html?))|\| ?(?:sh|bash)\b|"
        r"[12]>&1\b|/dev/(?:tcp|udp|null)",
        "shell redirection",
        (">", "<", "|", "/dev/"),
    ),
)
