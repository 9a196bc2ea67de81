"""DSSE envelopes: PAE per the spec, signatures over PAE, trust, hostile statements."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.integrity.dsse import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    EnvelopeError,
    SignatureError,
    make_statement,
    pae,
    sign_statement,
    statement_manifest,
    verify_envelope,
)
from mlwarden.integrity.keys import key_id
from mlwarden.integrity.manifest import FileEntry, Manifest, UnsafeManifestError

MANIFEST = Manifest({"model.bin": FileEntry("a" * 64, 10), "cfg/x.json": FileEntry("b" * 64, 2)})


def test_pae_matches_the_dsse_spec_test_vector() -> None:
    # protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_round_trip_returns_statement_and_signer() -> None:
    key = Ed25519PrivateKey.generate()
    statement = make_statement(MANIFEST, {"name": "m", "version": 1})
    env = sign_statement(statement, key)
    got, signer = verify_envelope(json.dumps(env), [key.public_key()])
    assert got == statement and signer == key_id(key.public_key())
    assert statement_manifest(got).to_json() == MANIFEST.to_json()
    assert got["predicateType"] == PREDICATE_TYPE
    assert {s["name"] for s in got["subject"]} == {"model.bin", "cfg/x.json"}


def test_signature_is_over_pae_not_raw_payload() -> None:
    key = Ed25519PrivateKey.generate()
    env = sign_statement(make_statement(MANIFEST, {}), key)
    payload = base64.b64decode(env["payload"])
    sig = base64.b64decode(env["signatures"][0]["sig"])
    key.public_key().verify(sig, pae(PAYLOAD_TYPE, payload))
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        key.public_key().verify(sig, payload)


def test_modified_payload_fails_verification() -> None:
    key = Ed25519PrivateKey.generate()
    env = sign_statement(make_statement(MANIFEST, {"name": "m"}), key)
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["mlwarden"]["name"] = "evil"
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(SignatureError):
        verify_envelope(env, [key.public_key()])


def test_untrusted_key_is_rejected_and_named() -> None:
    signer, trusted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = sign_statement(make_statement(MANIFEST, {}), signer)
    with pytest.raises(SignatureError) as info:
        verify_envelope(env, [trusted.public_key()])
    assert info.value.keyids == [key_id(signer.public_key())]


def test_signed_statement_with_traversal_path_is_rejected() -> None:
    key = Ed25519PrivateKey.generate()
    statement = make_statement(MANIFEST, {})
    statement["predicate"]["resources"][0]["name"] = "../../.bashrc"
    statement["subject"][0]["name"] = "../../.bashrc"
    env = sign_statement(statement, key)  # validly signed, still hostile
    with pytest.raises(UnsafeManifestError):
        verify_envelope(env, [key.public_key()])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        {"_type": st.just(STATEMENT_TYPE), "predicateType": st.just(PREDICATE_TYPE)},
        optional={"subject": _json, "predicate": _json},
    )
)
def test_malformed_statements_raise_only_documented_errors(statement) -> None:
    with pytest.raises((EnvelopeError, UnsafeManifestError)):
        statement_manifest(statement)


@settings(max_examples=60, deadline=None)
@given(_json)
def test_malformed_envelopes_raise_only_envelope_errors(envelope) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises((EnvelopeError, SignatureError)):
        verify_envelope(envelope, [key.public_key()])
