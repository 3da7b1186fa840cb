"""Personal data found by content: detectors run on a bounded sample of a column's distinct values.

Name hints (``schema.looks_like_pii``) miss e-mails in a column called ``contact`` or names in
``rep``; these detectors look at the values instead. Each detector takes a Series of strings (the
sample) and returns a boolean mask of the values it recognises, using pandas string operations
(vectorised regexes, checksums computed on digit arrays); only the phone detector calls
``phonenumbers`` per value, on the candidates of the bounded sample. A column is a hit when the
matching share of its sampled distinct values reaches the detector's threshold.

Nothing here returns, logs or raises with a cell value: a hit carries the detector's name, what it
looks for, the matching share and the sample size, so it can go into schemas, errors and logs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

SAMPLE_ROWS = 20_000  # rows examined per column (evenly spaced over the column)
SAMPLE_VALUES = 1_000  # distinct values examined per column
MAX_VALUE_CHARS = 256  # longer values are not examined (they count as non-matching)
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "CA", "AU")  # tried for numbers without a +country code

# ------------------------------------------------------------------------------------------------
# patterns
# ------------------------------------------------------------------------------------------------
_EMAIL = (
    r"(?<![\w.+-])[A-Za-z0-9._%+'-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?:"
    rf"(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}|:(?:(?::{_H}){{1,7}}|:)"
    rf"|(?:{_H}:){{6}}{_IPV4}|::(?:[Ff]{{4}}(?::0{{1,4}})?:)?{_IPV4}"
    r")(?:%[0-9A-Za-z._-]+)?"
)
_SSN = r"(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}"
_NINO = r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
_DNI = r"\d{8}-?[A-Z]|[XYZ]-?\d{7}-?[A-Z]"  # Spanish DNI / NIE, checked with the mod-23 letter
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_PHONE_SHAPE = r"(?:\+|00)?\s*(?:\(\d{1,5}\)|\d)[\d\s().\-/]{5,22}\d"
# not phone numbers: dates, decimals, clock times, SSN-shaped 123-45-6789
_NOT_PHONE = (r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d+\.\d+|\d{1,2}:\d{2}(?::\d{2})?"
              r"|\d{3}-\d{2}-\d{4}")
_CARD_SHAPE = r"\d{4}(?:[ -]?\d{2,7}){2,4}|\d{13,19}"
_IBAN_SHAPE = r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}"
_WORD = r"[A-Z][a-z]+(?:['’-][A-Z]?[a-z]+)?"  # Anne, O'Brien, Smith-Jones, McDonald (Mc+Donald below)
_SURNAME = r"(?:Mc|Mac|O'|O’|De|Van|Von|Di|Le|La)?" + _WORD
_PARTICLE = r"(?:de|da|del|della|der|den|di|du|dos|das|la|le|van|von|bin|ibn|al|el)"
_FULL_NAME = rf"(?P<first>{_WORD})(?: [A-Z]\.?)?(?: {_PARTICLE})*(?: {_SURNAME}){{1,2}}"
_LAST_FIRST = rf"{_SURNAME}, (?P<first>{_WORD})(?: [A-Z]\.?)?"
_SINGLE_NAME = rf"(?P<first>{_WORD})"


@dataclass(frozen=True)
class Detector:
    name: str
    label: str  # what the values look like, for messages ("e-mail addresses")
    match: Callable[[pd.Series], pd.Series]
    threshold: float  # share of the sampled distinct values that must match


@dataclass(frozen=True)
class PIIHit:
    """A column whose sampled values look like personal data (no value is kept)."""

    detector: str
    label: str
    share: float
    n_sampled: int

    def describe(self) -> str:
        return (f"{self.share:.0%} of {self.n_sampled} sampled distinct values look like {self.label} "
                f"(detector '{self.detector}')")


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------
def sample_values(s: pd.Series, *, max_rows: int = SAMPLE_ROWS, max_values: int = SAMPLE_VALUES) -> pd.Series:
    """Up to ``max_values`` distinct non-empty values as stripped strings, drawn from at most
    ``max_rows`` evenly spaced non-missing rows. Values longer than MAX_VALUE_CHARS are replaced
    by one placeholder that no detector matches (they still count in the denominator)."""
    s = s[s.notna()]
    if len(s) > max_rows:
        s = s.iloc[np.linspace(0, len(s) - 1, max_rows).astype(np.int64)]
    if s.empty:
        return pd.Series([], dtype=object)
    v = pd.Series(s.astype(str).to_numpy(dtype=object), dtype=object).str.strip()
    length = v.str.len()
    v = v[length > 0].where(length[length > 0] <= MAX_VALUE_CHARS, "\x00")  # '\x00' matches nothing
    v = v.drop_duplicates()
    if len(v) > max_values:
        v = v.iloc[np.linspace(0, len(v) - 1, max_values).astype(np.int64)]
    return v.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# detectors: Series of str -> boolean mask (same index)
# ------------------------------------------------------------------------------------------------
def detect_email(v: pd.Series) -> pd.Series:
    """Contains an e-mail address (also ``Name <a@b.org>`` or an address inside text)."""
    return v.str.contains(_EMAIL, regex=True, na=False)


def detect_phone(v: pd.Series, regions: tuple[str, ...] = PHONE_REGIONS) -> pd.Series:
    """A valid phone number (``phonenumbers``): +country numbers, or national ones in ``regions``.
    Shapes that are dates, times, decimals or SSNs are excluded before parsing."""
    digits = v.str.count(r"\d")
    cand = (
        v.str.fullmatch(_PHONE_SHAPE, na=False)
        & digits.between(7, 15)
        & ~v.str.fullmatch(_NOT_PHONE, na=False)
    )
    out = pd.Series(False, index=v.index)
    if not cand.any():
        return out
    import phonenumbers

    def valid(text: str) -> bool:
        text = "+" + text[2:] if text.startswith("00") else text
        for region in ((None,) if text.startswith("+") else regions):
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
        return False

    # bounded: at most SAMPLE_VALUES candidates of one column's sample
    out[cand] = [valid(t) for t in v[cand].tolist()]
    return out


def _digit_matrix(digits: pd.Series, width: int) -> np.ndarray:
    """Strings of ASCII digits/letters, left-padded with '0' to ``width`` -> (n, width) uint8 codes."""
    padded = digits.str.rjust(width, "0")
    return np.frombuffer("".join(padded.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, width)


def luhn_valid(digits: pd.Series) -> pd.Series:
    """Luhn checksum of digit strings (at most 19 digits), vectorised."""
    if digits.empty:
        return pd.Series(False, index=digits.index)
    arr = _digit_matrix(digits, 19).astype(np.int16) - 48
    rev = arr[:, ::-1]
    dbl = rev[:, 1::2] * 2
    dbl -= 9 * (dbl > 9)
    total = rev[:, 0::2].sum(axis=1) + dbl.sum(axis=1)
    return pd.Series(total % 10 == 0, index=digits.index)


def detect_card(v: pd.Series) -> pd.Series:
    """A payment card number: 13-19 digits (spaces/dashes allowed), issuer prefix 2-6, Luhn-valid."""
    shape = v.str.fullmatch(_CARD_SHAPE, na=False)
    digits = v.str.replace(r"[ -]", "", regex=True)
    cand = shape & digits.str.fullmatch(r"[2-6]\d{12,18}", na=False)
    out = pd.Series(False, index=v.index)
    if cand.any():
        out[cand] = luhn_valid(digits[cand]).to_numpy()
    return out


def iban_valid(compact: pd.Series) -> pd.Series:
    """ISO 13616 mod-97 check of upper-case IBANs without spaces (at most 34 characters), vectorised."""
    if compact.empty:
        return pd.Series(False, index=compact.index)
    rearranged = compact.str[4:] + compact.str[:4]
    codes = _digit_matrix(rearranged, 34).astype(np.int64)
    letter = codes >= 65
    vals = np.where(letter, codes - 55, codes - 48)  # A=10 ... Z=35
    mult = np.where(letter, 100, 10)
    mod = np.zeros(len(compact), dtype=np.int64)
    for j in range(codes.shape[1]):  # over the 34 positions; vectorised over values
        mod = (mod * mult[:, j] + vals[:, j]) % 97
    return pd.Series(mod == 1, index=compact.index)


def detect_iban(v: pd.Series) -> pd.Series:
    """An IBAN (two letters, two check digits, up to 30 alphanumerics) passing the mod-97 check."""
    upper = v.str.upper()
    compact = upper.str.replace(" ", "", regex=False)
    cand = upper.str.fullmatch(_IBAN_SHAPE, na=False) & compact.str.len().between(15, 34)
    out = pd.Series(False, index=v.index)
    if cand.any():
        out[cand] = iban_valid(compact[cand]).to_numpy()
    return out


def detect_ip(v: pd.Series) -> pd.Series:
    """An IPv4 or IPv6 address."""
    return v.str.fullmatch(_IPV4, na=False) | v.str.fullmatch(_IPV6, na=False)


def detect_national_id(v: pd.Series) -> pd.Series:
    """US social security numbers (123-45-6789), UK national insurance numbers (AB 12 34 56 C),
    Spanish DNI/NIE (12345678Z, with the mod-23 letter check)."""
    upper = v.str.upper()
    hit = v.str.fullmatch(_SSN, na=False) | upper.str.fullmatch(_NINO, na=False)
    dni = upper.str.fullmatch(_DNI, na=False)
    if dni.any():
        compact = upper[dni].str.replace("-", "", regex=False)
        number = compact.str[:-1].str.replace("X", "0").str.replace("Y", "1").str.replace("Z", "2")
        letters = np.array(list(_DNI_LETTERS))[number.astype(np.int64).to_numpy() % 23]
        hit[dni] = hit[dni] | (compact.str[-1].to_numpy() == letters)
    return hit


@functools.cache
def first_names() -> frozenset[str]:
    """Common first names (lower case), shipped as synth_pipeline/data/first_names.csv."""
    text = resources.files("synth_pipeline").joinpath("data/first_names.csv").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines()[1:] if line.strip())


def person_name_shares(v: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(full, single): masks of 'First [I.] Last [Last]' / 'Last, First' values whose first name is
    a common one, and of single capitalised tokens that are a common first name."""
    known = first_names()
    full = pd.Series(False, index=v.index)
    for pattern in (_FULL_NAME, _LAST_FIRST):
        first = v.str.extract(f"^(?:{pattern})$", expand=True)["first"]
        full |= first.str.lower().isin(known) & first.notna()
    single_first = v.str.extract(f"^(?:{_SINGLE_NAME})$", expand=True)["first"]
    single = single_first.str.lower().isin(known) & single_first.notna()
    return full, single


def detect_person_name(v: pd.Series) -> pd.Series:
    """Values that look like a person's name: two or three capitalised words starting with a
    common first name (or 'Last, First'), or a single common first name."""
    full, single = person_name_shares(v)
    return full | single


def _name_hit(v: pd.Series, mask: pd.Series) -> bool:
    """Full names: half the values; first names alone: 70% and at least 3 distinct (a column with
    'April' and 'June' is not a list of people)."""
    full, single = person_name_shares(v)
    n = max(len(v), 1)
    return bool(full.sum() / n >= 0.5 or (mask.sum() / n >= 0.7 and mask.sum() >= 3))


# Most specific first: on equal shares the first one is reported (a card number is also a digit string).
DETECTORS: tuple[Detector, ...] = (
    Detector("email", "e-mail addresses", detect_email, 0.5),
    Detector("card", "payment card numbers (Luhn-valid)", detect_card, 0.8),
    Detector("iban", "IBANs (mod-97 valid)", detect_iban, 0.5),
    Detector("national_id", "national ID numbers (US SSN, UK NINO, Spanish DNI)", detect_national_id, 0.5),
    Detector("ip", "IP addresses", detect_ip, 0.5),
    Detector("phone", "phone numbers", detect_phone, 0.5),
    Detector("person_name", "person names", detect_person_name, 0.5),
)
MIXED_THRESHOLD = 0.6  # several detectors together (e.g. a 'contact' column of e-mails and phones)


def _is_text(s: pd.Series) -> bool:
    return (
        s.dtype == object
        or pd.api.types.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def scan_series(s: pd.Series) -> list[PIIHit]:
    """Detectors whose threshold the column's sample reaches, best first (empty: nothing found).

    Text columns go through every detector; integer columns only through the card detector
    (card numbers read from CSV are integers); other columns are not scanned."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return []
    if _is_text(s):
        detectors = DETECTORS
    elif pd.api.types.is_integer_dtype(s):
        detectors = tuple(d for d in DETECTORS if d.name == "card")
        big = s[s.notna()]
        if big.empty or big.abs().max() < 10**12:
            return []
    else:
        return []
    v = sample_values(s)
    n = len(v)
    if n == 0:
        return []
    hits: list[PIIHit] = []
    union = pd.Series(False, index=v.index)
    shares: dict[str, float] = {}
    for d in detectors:
        mask = d.match(v)
        union |= mask
        share = float(mask.sum()) / n
        shares[d.name] = share
        passed = _name_hit(v, mask) if d.name == "person_name" else (share >= d.threshold and mask.any())
        if passed:
            hits.append(PIIHit(d.name, d.label, share, n))
    if not hits and float(union.sum()) / n >= MIXED_THRESHOLD:
        parts = [(name, sh) for name, sh in sorted(shares.items(), key=lambda kv: -kv[1]) if sh > 0]
        label = "personal data of several kinds (" + ", ".join(f"{name} {sh:.0%}" for name, sh in parts) + ")"
        hits.append(PIIHit("+".join(name for name, _ in parts), label, float(union.sum()) / n, n))
    return sorted(hits, key=lambda h: -h.share)  # stable: ties keep the DETECTORS order


def scan_frame(df: pd.DataFrame, columns: list[str] | None = None) -> dict[str, list[PIIHit]]:
    """``scan_series`` for each column (all by default); only columns with hits are returned."""
    out = {}
    for col in (columns if columns is not None else list(df.columns)):
        hits = scan_series(df[col])
        if hits:
            out[col] = hits
    return out
