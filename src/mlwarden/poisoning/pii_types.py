"""The table of sensitive-data types: one row per type, how it is found and checked.

Each :class:`PiiType` holds a pattern, an optional validator (checksums, issuer ranges,
libphonenumber, a name gazetteer, date plausibility) and optional context words that
must (``context="required"``) or may (``"boost"``) appear shortly before the match or in
the column name. The order of :data:`TYPES` matters: a span is used once, so secrets and
checksummed identifiers come before the looser patterns (phone numbers, names).

Configuration (:class:`PiiConfig`, from ``--pii-config FILE``) switches types off,
chooses the phone regions and adds patterns of the user's own (``kind``, ``category``,
``regex``, optional ``context`` words).

Sources: card issuer ranges from ISO/IEC 7812 as published by the networks; US SSN
rules from the SSA (area 000, 666 and 900-999, group 00 and serial 0000 never issued);
UK NINO prefixes from HMRC's manual NIM39110; names from the US Census Bureau's 1990
frequency lists (public domain, through the ``names`` package).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlwarden.core.errors import UserError

PERSONAL = "personal"
SECRET = "secret"

#: Characters looked at before a match for context words.
CONTEXT_WINDOW = 40


@dataclass(frozen=True)
class PiiType:
    """One sensitive-data type: how it is matched, validated and named."""

    kind: str
    category: str  #: "personal" or "secret"
    label: str  #: what a report calls it
    pattern: re.Pattern[str]
    validate: Callable[[str, str], bool] | None = None  #: (value, context) -> keep?
    context: tuple[str, ...] = ()
    context_mode: str = "none"  #: "none" | "required" | "boost"
    group: int = 0  #: the regex group that is the value (0: the whole match; -1: the first set)
    weight: float = 0.7  #: how much a hit weighs in the ranked 'suspicious' list
    #: splits a match into candidate spans tried in order (a run of capitalised words
    #: holds a name somewhere inside: "Dear John Smith")
    candidates: Callable[[re.Match[str]], list[tuple[int, int]]] | None = None


@dataclass(frozen=True)
class PiiConfig:
    """Which types run, the phone regions, and the user's own patterns."""

    disabled: frozenset[str] = frozenset()
    phone_regions: tuple[str, ...] = ("US", "GB")
    extra: tuple[PiiType, ...] = ()

    def types(self) -> list[PiiType]:
        return [t for t in (*self.extra, *TYPES) if t.kind not in self.disabled]


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of a string of digits, as payment card numbers carry."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 IBAN check: move the first four characters to the end, letters to
    numbers (A=10..Z=35), and the number mod 97 must be 1."""
    s = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Shannon entropy of the characters of ``text``, bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# (first prefix, last prefix, prefix length, allowed lengths): ISO/IEC 7812 issuer ranges
_CARD_RANGES: tuple[tuple[int, int, int, tuple[int, ...]], ...] = (
    (4, 4, 1, (16, 19)),  # Visa (13-digit numbers are no longer issued; EAN-13 codes look alike)
    (51, 55, 2, (16,)),  # Mastercard
    (2221, 2720, 4, (16,)),  # Mastercard 2-series
    (34, 34, 2, (15,)),  # American Express
    (37, 37, 2, (15,)),
    (6011, 6011, 4, (16, 17, 18, 19)),  # Discover
    (644, 649, 3, (16, 17, 18, 19)),
    (65, 65, 2, (16, 17, 18, 19)),
    (3528, 3589, 4, (16, 17, 18, 19)),  # JCB
    (2131, 2131, 4, (15,)),  # JCB, legacy 15-digit ranges
    (1800, 1800, 4, (15,)),
    (300, 305, 3, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, 2, (14, 15, 16, 17, 18, 19)),
    (38, 39, 2, (16, 17, 18, 19)),
    (62, 62, 2, (16, 17, 18, 19)),  # UnionPay
    (2200, 2204, 4, (16, 17, 18, 19)),  # Mir
    (50, 50, 2, (16, 17, 18, 19)),  # Maestro
    (56, 58, 2, (16, 17, 18, 19)),
    (67, 67, 2, (16, 17, 18, 19)),
)


def card_issuer_valid(digits: str) -> bool:
    """A payment card number: a known issuer range and length, and a Luhn check digit."""
    if len(set(digits)) == 1 or not luhn_valid(digits):
        return False
    for lo, hi, width, lengths in _CARD_RANGES:
        if len(digits) in lengths and lo <= int(digits[:width]) <= hi:
            return True
    return False


_CARD_CUE = re.compile(
    r"(?i)(?:card|\bcc\b|credit|debit|visa|master|amex|discover|jcb|maestro|payment|paid)"
)


def _card(value: str, ctx: str) -> bool:
    """An issuer range with a Luhn digit; with card words before it ('card', 'visa',
    'paid with') a Luhn digit suffices (test and legacy ranges)."""
    digits = re.sub(r"\D", "", value)
    if card_issuer_valid(digits):
        return True
    return bool(_CARD_CUE.search(ctx)) and len(set(digits)) > 1 and luhn_valid(digits)


def _iban(value: str, _ctx: str) -> bool:
    return iban_valid(value)


def _entropy(threshold: float) -> Callable[[str, str], bool]:
    return lambda value, _ctx: shannon_entropy(value) >= threshold


def _aws_secret(value: str, ctx: str) -> bool:
    """40 base64 characters of a random key: not hex (a SHA-1), mixed classes, high entropy;
    without 'aws'/'secret' context it must also hold a '/' or '+'."""
    if re.fullmatch(r"[0-9a-fA-F]{40}", value):
        return False
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
    if classes < 3 or shannon_entropy(value) < 4.0:
        return False
    return bool(re.search(r"(?i)aws|secret|access.?key", ctx)) or bool(re.search(r"[/+]", value))


def _jwt(value: str, _ctx: str) -> bool:
    head = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_PASSWORD_STOP = _words(
    "reset link expired expires changed change policy manager protected required hint "
    "field the for and was is has will must should please here below above strength "
    "length characters",
)


def _password(value: str, _ctx: str) -> bool:
    """A password in prose: not a common word of the sentence around it."""
    v = value.strip(".,;:!?")
    if len(v) < 4 or v.lower() in _PASSWORD_STOP or set(v) <= set("*x•.?#"):
        return False
    return bool(re.search(r"[\d\W_]", v)) or (v != v.lower() and v != v.upper()) or len(v) >= 8


def _url_password(value: str, _ctx: str) -> bool:
    return value.lower() not in {"password", "pass", "xxx", "***", "****", "secret", "token"}


def _ip(value: str, ctx: str) -> bool:
    """An IP address, not a version string ('version 1.2.3.4', 'v1.2.3.4')."""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    if addr.version == 4 and re.search(
        r"(?i)(?:\bv|version|ver\.?|release|build|firmware)\s*$", ctx
    ):
        return False
    return not addr.is_unspecified


_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"
    rf"|(?:\d{{1,2}}(?:st|nd|rd|th)?\s+)?{_MONTHS}\s+(?:\d{{1,2}}(?:st|nd|rd|th)?,?\s+)?\d{{4}})"
)


def _plausible_birth_date(value: str, _ctx: str) -> bool:
    years = [int(y) for y in re.findall(r"\d{4}", value)]
    if years and not 1900 <= years[0] <= 2026:
        return False
    nums = [int(n) for n in re.findall(r"\d+", value) if len(n) <= 2]
    return all(0 < n <= 31 for n in nums) if not re.search(r"[A-Za-z]", value) else True


#: street suffixes: the USPS Publication 28 (appendix C1) names and abbreviations in
#: common use, and British ones
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl"
    r"|Terrace|Ter|Way|Parkway|Pkwy|Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl|Crescent"
    r"|Close|Gardens?|Groves?|Row|Mews|Hills?|Walks?|Alley|Annex|Arcade|Bayou|Bend|Bluffs?"
    r"|Bottom|Branch|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Circles?"
    r"|Cliffs?|Commons?|Corners?|Course|Courts?|Coves?|Creek|Crest|Crossing|Crossroad"
    r"|Curve|Dale|Dam|Divide|Drives?|Estates?|Expressway|Extensions?|Falls?|Ferry"
    r"|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Freeway|Gateway|Glens?|Greens?"
    r"|Harbors?|Haven|Heights|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?"
    r"|Landing|Lights?|Loaf|Locks?|Lodge|Loop|Mall|Manors?|Meadows?|Mills?|Mission"
    r"|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways?|Pass|Passage"
    r"|Path|Pike|Pines?|Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ramp|Ranch|Rapids?"
    r"|Rest|Ridges?|River|Roads?|Route|Rue|Run|Shoals?|Shores?|Skyway|Springs?|Spurs?"
    r"|Squares?|Station|Stream|Streets?|Summit|Trace|Track|Turnpike|Underpass|Unions?"
    r"|Valleys?|Viaduct|Views?|Villages?|Ville|Vista|Walls?|Ways?|Wells?|Wharf|Yard)"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}"


def _phone_validator(regions: tuple[str, ...]) -> Callable[[str, str], bool]:
    def check(value: str, ctx: str) -> bool:
        return phone_valid(value, ctx, regions)

    return check


def phone_valid(value: str, ctx: str, regions: tuple[str, ...] = ("US", "GB")) -> bool:
    """A phone number by Google's libphonenumber: valid in one of ``regions`` (or by its
    ``+`` country code), or at least possible when written as a phone number is written
    (``+``, an area code in brackets, a national trunk ``0``, or 'phone'/'tel' context)."""
    import phonenumbers

    # dates and the SSN shape (3-2-4) are never phone numbers
    if re.fullmatch(
        r"\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{3}[- .]\d{2}[- .]\d{4}",
        value.strip(),
    ):
        return False
    body = re.sub(r"\s?(?:x|ext\.?|#)\s?\d{1,5}$", "", value.strip())
    digits = re.sub(r"\D", "", body)
    if not 7 <= len(digits) <= 15 or ("." in body and " " in body):
        return False
    cue = bool(
        re.search(
            r"(?i)(?:phone|tel|mobile|cell|call|fax|whatsapp|sms|contact|reach me(?: at| on)?|text me(?: at| on)?)\W*$",
            ctx,
        )
    )
    if body.isdigit() and not cue:
        return False  # a bare run of digits is an id until something says it is a phone
    strong = (
        body.startswith(("+", "(", "00"))
        or bool(re.match(r"0[1-9]\d{1,3}[ -]", body))
        or bool(_NANP.fullmatch(body))
        or cue
    )
    for region in (None,) if body.startswith("+") else regions:
        try:
            number = phonenumbers.parse(
                body if not body.startswith("00") else "+" + body[2:], region
            )
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) or (
            strong and phonenumbers.is_possible_number(number)
        ):
            return True
    return False


#: the North American layout (555-123-4567, (555) 123-4567, 1-555-123-4567): a phone
#: number even where the area code is not assigned (test data, fiction)
_NANP = re.compile(r"(?:\+?1[ .-]?)?\(?[2-9]\d{2}\)?[ .-]?\d{3}[.-]\d{4}")


@lru_cache(maxsize=1)
def name_gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """First names and the 30,000 most frequent surnames of the US Census 1990 lists."""
    import names  # type: ignore[import-untyped]

    root = Path(names.__file__).parent

    def read(name: str, limit: int | None = None) -> frozenset[str]:
        words = []
        with open(root / name, encoding="ascii") as fh:
            for i, line in enumerate(fh):
                if limit is not None and i >= limit:
                    break
                if line.strip():
                    words.append(line.split()[0].capitalize())
        return frozenset(words)

    first = read("dist.female.first") | read("dist.male.first")
    return first, read("dist.all.last", 30000)


# English words that are also first names: as the first word they need a cue ("Dear")
_COMMON_FIRST = _words(
    """Will May Mark Bill Grant Rich Sandy Frank Art Guy Rose Hope Faith Joy Grace June
    April August Don Jack Pat Penny Ray Rob Sue Summer Autumn Dawn Eve Holly Iris Ivy Lily
    Olive Ruby Pearl Jean Chase Chance Cliff Dean Drew Gene Herb Lance Miles Norm Page
    Price Reed Wade Ward Young King Long Love Major Lane Hall Park Green Brown White Black
    Gray Little North South East West New Old Big Great Royal General Central National
    International Global United First Second Third Last Best Good Happy Merry Christmas
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March July
    September October November December Dear Hello Thanks Thank Please Note Total Order
    Account Customer Service Support Team Manager Director Doctor Madison Jordan Georgia
    Virginia Carolina Dakota Washington Lincoln Jefferson Houston Austin Dallas Denver
    Phoenix Paris London Sydney Victoria Regina Florence Brooklyn Troy Orlando Memphis"""
)
# surnames that are everyday words
_COMMON_SURNAME_WORDS = _words(
    """Power Day Call Strong Smart Bright Fair Sharp Wise Free Bell Cash Case Hand Head Best
    Good Story Law Rule Sale Page Bond Gay Hope Joy Best Rich Ready Moody Early Small Short
    Mayday Christmas Easter Street House Field Stone Wood Hill Dale Brook"""
)
# words that end a place or an organisation, never a person's name
_NOT_LAST = _words(
    """Street Road Avenue River Lake Station University College School Hospital Bank
    Square Center Centre Hotel Church County City Valley Mountain Island Bay Beach Tech
    Inc Ltd Corp Company Group Airport Bridge Court Drive Way Place Park Day Service San
    Santa Saint St El La Los Las Del Port Fort Mount Spain France Germany Italy China Japan
    India Canada Mexico Brazil Kong Korea Africa America Zealand Lanka Salvador Rica Lucia
    Marino Mayen Puerto Rico Islands Island Republic Kingdom States Emirates Arabia Guinea Verde Leone
    Tome Barthelemy Kitts Miquelon Futuna Caicos Herzegovina North South East West New Old
    United Great Royal General Central National International Global
    Services Support Team Day Night Times Post News Street Club Museum Institute Airlines
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April
    June July August September October November December Christmas Eve"""
)
_NAME_COLUMN = re.compile(
    r"(?i)(?:^|_|\b)(?:name|full.?name|first.?name|last.?name|surname|customer|patient|"
    r"employee|contact|person|author|user.?name|owner|holder|recipient|sender)(?:$|_|\b)"
)


#: one name word: Smith, Smith-Jones, O'Connor, D'Angelo
_PART = r"(?:[A-Z][a-z]*['’]?[A-Z][a-z]+|[A-Z][a-z]+)"
_WORD = rf"(?:{_PART}(?:-{_PART})?)"
#: words that say a name follows: a salutation or title (any two capitalised words
#: will do), or a weaker cue (one of the words must be a known name)
_STRONG_CUE = re.compile(
    r"(?i)(?:\bdear|\bmrs?\.?|\bms\.?|\bmiss|\bdr\.?|\bprof\.?|name(?: is)?:?|named|signed:?)\W*$"
)
_WEAK_CUE = re.compile(r"(?i)(?:\bby|\bfrom|patient|customer|contact|attn|\bcc|\bto|\bwith)\W*$")


def _gazetteer_key(word: str) -> str:
    return re.sub(r"['’-]", "", word).capitalize()


def _person_name(value: str, ctx: str) -> bool:
    """Two or three capitalised words: a census first name, then a surname. After a
    salutation or title ('Dear', 'Mr', 'name:') any two words not on the stop list are a
    name; after a weaker cue ('by', 'from', a 'customer' column) one word must be known."""
    first_names, surnames = name_gazetteer()
    words = re.findall(_WORD, value)
    if len(words) < 2 or any(w in _NOT_LAST for w in words):
        return False
    first, last = words[0], words[-1]
    if _STRONG_CUE.search(ctx):
        return True
    known_first = _gazetteer_key(first) in first_names
    known_last = _gazetteer_key(last.split("-")[0]) in surnames
    if first in _COMMON_FIRST:
        # "Jack Williams" is a name, "Will Power" and "May Day" are not
        return known_last and last not in _COMMON_FIRST and last not in _COMMON_SURNAME_WORDS
    if known_first and known_last:
        return True
    told = _WEAK_CUE.search(ctx) or _NAME_COLUMN.search(ctx.split(" ", 1)[0])
    return bool(told) and (known_first or known_last)


_TITLED = re.compile(
    r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?(?:\s+[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?)?"
)
_NAME_TOKEN = re.compile(rf"{_WORD}|[A-Z]\.")


def _name_windows(match: re.Match[str]) -> list[tuple[int, int]]:
    """Every run of two or three words (a middle initial may sit between) inside a run
    of capitalised words, left to right."""
    base = match.start()
    toks = [(base + t.start(), base + t.end()) for t in _NAME_TOKEN.finditer(match.group(0))]
    out = []
    for i in range(len(toks)):
        for j in (i + 1, i + 2):
            if j < len(toks):
                out.append((toks[i][0], toks[j][1]))
    return out


def _titled_name(value: str, _ctx: str) -> bool:
    return value.split()[-1] not in _NOT_LAST


def _ctx(*words: str) -> tuple[str, ...]:
    return words


TYPES: tuple[PiiType, ...] = (
    # secrets first: their bodies contain digit runs that other types would take
    PiiType(
        "private_key",
        SECRET,
        "private key",
        re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
        weight=1.0,
    ),
    PiiType(
        "aws_access_key",
        SECRET,
        "AWS access key id",
        re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        weight=1.0,
    ),
    PiiType(
        "github_token",
        SECRET,
        "GitHub token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{50,})\b"),
        weight=1.0,
    ),
    PiiType(
        "gitlab_token",
        SECRET,
        "GitLab token",
        re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
        weight=1.0,
    ),
    PiiType(
        "slack_webhook",
        SECRET,
        "Slack webhook URL",
        re.compile(
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"
        ),
        weight=1.0,
    ),
    PiiType(
        "discord_webhook",
        SECRET,
        "Discord webhook URL",
        re.compile(
            r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{5,}/[A-Za-z0-9_-]{30,}"
        ),
        weight=1.0,
    ),
    PiiType(
        "slack_token",
        SECRET,
        "Slack token",
        re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}\b"),
        weight=1.0,
    ),
    PiiType(
        "stripe_key",
        SECRET,
        "Stripe secret key",
        re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b"),
        weight=1.0,
    ),
    PiiType(
        "google_api_key",
        SECRET,
        "Google API key",
        re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
        weight=1.0,
    ),
    PiiType(
        "openai_key",
        SECRET,
        "OpenAI / Anthropic API key",
        re.compile(
            r"\bsk-(?:ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{60,}|proj-[A-Za-z0-9_-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})"
        ),
        weight=1.0,
    ),
    PiiType(
        "sendgrid_key",
        SECRET,
        "SendGrid API key",
        re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
        weight=1.0,
    ),
    PiiType(
        "npm_token",
        SECRET,
        "npm / PyPI token",
        re.compile(r"\b(?:npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})"),
        weight=1.0,
    ),
    PiiType(
        "jwt",
        SECRET,
        "JSON Web Token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{10,}"),
        _jwt,
        weight=1.0,
    ),
    PiiType(
        "azure_key",
        SECRET,
        "Azure storage account key",
        re.compile(r"(?i)AccountKey=([A-Za-z0-9+/]{80,}={0,2})"),
        group=1,
        weight=1.0,
    ),
    PiiType(
        "url_credentials",
        SECRET,
        "password in a URL",
        re.compile(r"\b[a-z][a-z0-9+.-]{1,15}://[^\s\x00/:@]{1,64}:([^\s\x00/@]{3,128})@[\w.-]+"),
        _url_password,
        group=1,
        weight=1.0,
    ),
    PiiType(
        "aws_secret_key",
        SECRET,
        "AWS secret access key",
        re.compile(r"(?<![A-Za-z0-9/+])([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        _aws_secret,
        group=1,
        weight=1.0,
    ),
    PiiType(
        "password",
        SECRET,
        "password",
        re.compile(r"(?i)\b(?:password|passwd|pwd|pass)\s*[:=]\s*['\"]?([^\s\x00'\",;]{4,})"),
        group=1,
        weight=1.0,
    ),
    PiiType(
        "password_prose",
        SECRET,
        "password in prose",
        re.compile(
            r"(?i)\b(?:pass(?:word|code|phrase)|pwd|pin(?: code)?)\s*(?:is|was|=|:|set to|reset to|changed to|->)\s*['\"“]?([^\s\x00'\"”,;]{4,64})"
            r"|\b(?:temp(?:orary)?|one[- ]time|new|initial|default)\s+pass(?:word|code)\s+['\"“]?([^\s\x00'\"”,;]{4,64})"
        ),
        _password,
        group=-1,
        weight=1.0,
    ),
    PiiType(
        "generic_secret",
        SECRET,
        "API key or token",
        re.compile(
            r"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|bearer)"
            r"\s*[:=]?\s*['\"]?([A-Za-z0-9/+_\-.=]{16,})"
        ),
        _entropy(3.5),
        group=1,
        weight=1.0,
    ),
    # checksummed and ranged identifiers
    PiiType(
        "email",
        PERSONAL,
        "e-mail address",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ),
    PiiType(
        "iban",
        PERSONAL,
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        _iban,
        weight=0.9,
    ),
    PiiType(
        "card_number",
        PERSONAL,
        "payment card number",
        re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])"),
        _card,
        weight=0.9,
    ),
    PiiType(
        "us_ssn",
        PERSONAL,
        "US Social Security number",
        re.compile(r"\b(?!000|666|9\d\d)\d{3}([- .])(?!00)\d{2}\1(?!0000)\d{4}\b"),
        weight=0.9,
    ),
    PiiType(
        "us_ssn_bare",
        PERSONAL,
        "US Social Security number",
        re.compile(r"\b(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}\b"),
        context=_ctx("ssn", "social security", "soc sec", "ss#", "ss no", "ss number"),
        context_mode="required",
        weight=0.9,
    ),
    PiiType(
        "uk_nino",
        PERSONAL,
        "UK National Insurance number",
        re.compile(
            # written whole (AB123456C) or in pairs (AB 12 34 56 C): "PN 320008A" is a
            # part number
            r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
            r"(?:\d{6}[A-D]|( ?)\d{2}\1\d{2}\1\d{2}\1[A-D])\b"
        ),
        weight=0.9,
    ),
    PiiType(
        "date_of_birth",
        PERSONAL,
        "date of birth",
        re.compile(
            rf"(?i)\b(?:d\.?o\.?b\.?|date of birth|birth ?date|birthday|born(?: on| in)?|b\.)\s*[:\-]?\s*(?:on\s+|is\s+)?({_DATE})"
        ),
        _plausible_birth_date,
        group=1,
        weight=0.8,
    ),
    PiiType(
        "date_of_birth_column",
        PERSONAL,
        "date of birth",
        re.compile(rf"(?:^|(?<=\x00))\s*({_DATE})\s*(?=\x00|$)"),
        _plausible_birth_date,
        context=_ctx("dob", "birth", "birthday"),
        context_mode="column",
        group=1,
        weight=0.8,
    ),
    PiiType(
        "street_address",
        PERSONAL,
        "street address",
        re.compile(
            rf"(?:\b(?:Flat|Studio|Apartment|Apt\.?|Unit|Suite)\s+\d{{1,5}}[A-Za-z]?,?\s+"
            rf"|\b\d{{1,6}}[A-Za-z]?,?\s+)(?:[NSEW]\.?\s+)?(?:[A-Z][a-zA-Z'.-]*\s+){{1,3}}{_STREET_SUFFIX}\b\.?"
            rf"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?\s*[\w-]+)?"
            rf"(?:,\s*[A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+){{0,2}}(?:,?\s*(?:[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?|{_UK_POSTCODE}))?)?"
            r"|\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b"
        ),
        weight=0.7,
    ),
    PiiType(
        "ip_address",
        PERSONAL,
        "IP address",
        re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])"),
        _ip,
        weight=0.5,
    ),
    PiiType(
        "ipv6_address",
        PERSONAL,
        "IP address",
        re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?![\w:])"),
        _ip,
        weight=0.5,
    ),
    PiiType(
        "phone",
        PERSONAL,
        "phone number",
        re.compile(
            r"(?<![\w+/.-])(?:(?:\+|\b00)\d{1,3}[ .-]?)?(?:\(0\)\s?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,15}(?:[ .-]\d{2,8}){0,4}"
            r"(?:\s?(?:x|ext\.?|#)\s?\d{1,5})?(?![\w/-])"
        ),
    ),
    PiiType("titled_name", PERSONAL, "person name", _TITLED, _titled_name),
    PiiType(
        "person_name",
        PERSONAL,
        "person name",
        re.compile(rf"\b{_WORD}(?:\s+(?:[A-Z]\.|{_WORD})){{1,6}}\b"),
        _person_name,
        candidates=_name_windows,
    ),
)

#: One kind name per type as reports show them (the two SSN rows and two date rows, and
#: the two name rows, are one type each).
REPORTED_KIND = {
    "us_ssn_bare": "us_ssn",
    "date_of_birth_column": "date_of_birth",
    "titled_name": "person_name",
    "password_prose": "password",
    "ipv6_address": "ip_address",
}
LABELS = {t.kind: t.label for t in TYPES}
SECRET_KINDS = frozenset(REPORTED_KIND.get(t.kind, t.kind) for t in TYPES if t.category == SECRET)
PERSONAL_KINDS = frozenset(
    REPORTED_KIND.get(t.kind, t.kind) for t in TYPES if t.category == PERSONAL
)
#: Names the configuration accepts for switching types off.
KNOWN_KINDS = frozenset({t.kind for t in TYPES} | set(REPORTED_KIND.values()))


def with_phone_regions(types: list[PiiType], regions: tuple[str, ...]) -> list[PiiType]:
    """The table with the phone validator bound to ``regions``."""
    out = []
    for t in types:
        if t.kind == "phone":
            t = replace(t, validate=_phone_validator(regions))
        out.append(t)
    return out


def load_config(path: str | Path | None, disable: list[str] | None = None) -> PiiConfig:
    """A :class:`PiiConfig` from a YAML or JSON file and/or a list of kinds to switch off.

    File keys: ``disable`` (kinds), ``phone_regions`` (ISO 3166 codes), ``patterns``
    (list of ``{kind, category: personal|secret, regex, label?, context?: [words]}``).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(
                f"{path}: cannot read the sensitive-data configuration ({exc})"
            ) from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a mapping with disable / phone_regions / patterns")
    off = [*(raw.get("disable") or []), *(disable or [])]
    unknown = sorted(
        set(off)
        - KNOWN_KINDS
        - {p.get("kind") for p in raw.get("patterns") or [] if isinstance(p, dict)}
    )
    if unknown:
        raise UserError(
            f"unknown sensitive-data type(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(KNOWN_KINDS))}"
        )
    disabled = set(off) | {k for k, v in REPORTED_KIND.items() if v in off}
    extra = tuple(_user_type(p, path) for p in raw.get("patterns") or [])
    regions = tuple(str(r).upper() for r in raw.get("phone_regions") or ("US", "GB"))
    return PiiConfig(disabled=frozenset(disabled), phone_regions=regions, extra=extra)


def _user_type(spec: Any, path: Any) -> PiiType:
    if not isinstance(spec, dict) or not {"kind", "regex"} <= set(spec):
        raise UserError(f"{path}: each pattern needs 'kind' and 'regex' (got {spec!r})")
    category = spec.get("category", PERSONAL)
    if category not in (PERSONAL, SECRET):
        raise UserError(f"{path}: pattern {spec['kind']!r}: category must be personal or secret")
    try:
        pattern = re.compile(str(spec["regex"]))
    except re.error as exc:
        raise UserError(f"{path}: pattern {spec['kind']!r} is not a valid regex ({exc})") from None
    context = tuple(str(w).lower() for w in spec.get("context") or ())
    return PiiType(
        str(spec["kind"]),
        category,
        str(spec.get("label", spec["kind"])),
        pattern,
        context=context,
        context_mode="required" if context else "none",
        weight=1.0 if category == SECRET else 0.8,
    )


@dataclass
class Hit:
    """One validated match: the reported kind, the raw value and its place in the text."""

    kind: str
    value: str
    start: int
    end: int
    weight: float = field(default=0.7, compare=False)


#: Substrings (of the lower-cased text) one of which a match cannot do without: a type
#: whose substrings are all absent from a chunk of records is not run on it.
PREFILTER: dict[str, tuple[str, ...]] = {
    "private_key": ("private key",),
    "aws_access_key": ("akia", "asia"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-",),
    "slack_webhook": ("hooks.slack.com",),
    "discord_webhook": ("/api/webhooks/",),
    "slack_token": ("xox",),
    "stripe_key": ("_live_", "_test_"),
    "google_api_key": ("aiza",),
    "openai_key": ("sk-",),
    "sendgrid_key": ("sg.",),
    "npm_token": ("npm_", "pypi-"),
    "jwt": ("eyj",),
    "azure_key": ("accountkey=",),
    "url_credentials": ("://",),
    "password": ("pass", "pwd"),
    "password_prose": ("pass", "pwd", "pin"),
    "generic_secret": ("key", "secret", "token", "bearer"),
    "email": ("@",),
    "ip_address": (".",),
    "ipv6_address": ("::", ":"),
    "us_ssn_bare": ("ssn", "social", "soc sec", "ss#", "ss no", "ss number"),
    "date_of_birth": ("birth", "dob", "d.o.b", "born", "b."),
    "titled_name": ("mr", "ms", "miss", "dr", "prof"),
}
