"""Sensitive-data scanner: checksums, patterns (with negatives), CSV counts, masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.core.errors import InputFileError
from mlwarden.poisoning.pii import find, iban_valid, luhn_valid, mask, scan_file, shannon_entropy


def _check_digit(payload: str) -> str:
    for d in "0123456789":
        if luhn_valid(payload + d):
            return d
    raise AssertionError("no Luhn check digit")


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_exactly_one_luhn_check_digit_completes_any_payload(payload):
    valid = [d for d in "0123456789" if luhn_valid(payload + d)]
    assert len(valid) == 1


@given(
    st.text(alphabet="0123456789", min_size=13, max_size=19), st.integers(0, 18), st.integers(1, 9)
)
def test_changing_one_digit_breaks_luhn(number, pos, delta):
    number = number[:-1] + _check_digit(number[:-1])
    pos %= len(number)
    changed = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    assert not luhn_valid(changed)


def test_known_test_card_numbers_pass_luhn_and_are_found():
    for card in ("4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"):
        assert [k for k, _ in find(f"paid with {card} today")] == ["card_number"]


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "0000 0000 0000 0000",  # all one digit
        "invoice 12345, year 2024, qty 7",
        "timestamp 1700000000123",
    ],
)
def test_numbers_that_are_not_cards_are_not_reported(text):
    assert [k for k, _ in find(text) if k == "card_number"] == []


def test_iban_mod97():
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82")


@pytest.mark.parametrize(
    "text, kind",
    [
        ("mail jane.roe@example.org please", "email"),
        ("call +44 20 7946 0958", "phone"),
        ("call (555) 123-4567", "phone"),
        ("ssn 123-45-6789", "us_ssn"),
        ("nino AB 12 34 56 C", "uk_nino"),
        ("iban DE89 3704 0044 0532 0130 00", "iban"),
        ("key AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "github_token"),
        ("xoxb-123456789012-abcdefghijkl", "slack_token"),
        ("password=hunter22", "password"),
        ("api_key = 'Zx8fK2pLq9Wm4Rt7Yv1Bn3Cj'", "generic_secret"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private_key"),
    ],
)
def test_each_kind_is_found(text, kind):
    assert kind in [k for k, _ in find(text)]


@pytest.mark.parametrize(
    "text",
    [
        "ssn 000-12-3456",  # area 000 is never issued
        "ssn 666-12-3456",
        "nino BG 12 34 56 A",  # BG prefix is not allocated
        "token = aaaaaaaaaaaaaaaaaaaaaaaa",  # low entropy: a placeholder, not a key
        "AKIA123",  # too short
        "version 1.2.3-4567",
        "-----BEGIN PUBLIC KEY-----",
    ],
)
def test_lookalikes_are_not_reported(text):
    assert find(text) == []


def test_entropy_of_uniform_and_constant_strings():
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kind, value, hidden",
    [
        ("card_number", "4111 1111 1111 1111", "411111111111"),
        ("email", "jane.roe@example.org", "jane.roe"),
        ("password", "hunter22", "hunter"),
        ("us_ssn", "123-45-6789", "12345"),
    ],
)
def test_masking_hides_the_value(kind, value, hidden):
    assert hidden not in mask(kind, value).replace(" ", "")


def test_csv_counts_per_column(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(
        "name,contact,note,label\n"
        "Ann,ann@example.com,card 4111111111111111,0\n"
        "Bob,bob@example.com,nothing here,1\n"
        "Cy,+1 415 555 0199,password: s3cretPass,0\n",
        encoding="utf-8",
    )
    scan = scan_file(path)
    assert scan.format == "csv" and scan.records == 3
    assert scan.counts["email"] == {"contact": 2}
    assert scan.counts["phone"] == {"contact": 1}
    assert scan.counts["card_number"] == {"note": 1}
    assert scan.counts["password"] == {"note": 1}
    assert "name" not in {f for per in scan.counts.values() for f in per}
    assert all("ann@" not in e for e in scan.examples["email"])


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(InputFileError, match="binary"):
        scan_file(path)


def test_oversized_file_is_marked_partial(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("a@example.com\n" * 100 + "late@example.com\n" * 100, encoding="utf-8")
    scan = scan_file(path, max_bytes=1400)
    assert scan.partial
    assert 0 < scan.total("email") < 200


@given(st.text(max_size=300))
def test_any_text_scans_without_error_and_masks_every_hit(text):
    from mlwarden.poisoning.pii import PERSONAL_KINDS, SECRET_KINDS

    for kind, value in find(text):
        assert kind in PERSONAL_KINDS | SECRET_KINDS
        if len(value) >= 8:
            assert value not in mask(kind, value)


def test_text_file_with_a_private_key_is_counted_per_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(
        "deploy notes\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE...\n-----END EC PRIVATE KEY-----\n",
        encoding="utf-8",
    )
    scan = scan_file(path)
    assert scan.format == "text" and scan.records == 4
    assert scan.counts == {"private_key": {"text": 1}}
