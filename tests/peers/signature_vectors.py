#!/usr/bin/env python3
"""Webhook signature vectors made by the official SDKs, for driftless's receivers.

Signs with the SDKs' own code, never a re-implementation:

- stripe (stripe-python): ``stripe.WebhookSignature.generate_signature_header`` (the
  helper stripe-python ships "for signing payloads in unit tests") and
  ``WebhookSignature._compute_signature`` for extra ``v1`` entries; every vector is then
  checked with ``stripe.Webhook.construct_event`` (300 s tolerance).
- hubspot-api-client: ``hubspot.utils.signature.Signature.get_signature`` with
  ``signature_version="v3"`` (base64 HMAC-SHA256 of method + uri + body + timestamp in
  ms); every vector is then checked with ``Signature.is_valid(..., signature_version="v3")``.

The caller (tests/it/signatures.rs) chooses the secrets, the URI the HubSpot deliveries will
hit, "now", and the records the events are about. Prints one JSON document:

    {"sdk": {...versions...}, "vectors": [{system, name, method, path, uri, body, headers,
      secret_used, expect, code, reason, sdk_verdict, sdk_detail}, ...]}

``expect`` is driftless's policy; ``sdk_verdict`` is what the SDK's own verification said.
The script exits non-zero if the two disagree, so a vector never encodes a guess.
"""

import argparse
import json
import secrets as rnd
import sys
from importlib.metadata import version

import stripe
from hubspot.exceptions import InvalidSignatureTimestampError
from hubspot.utils.signature import Signature

STRIPE_TOLERANCE_S = 300  # stripe.Webhook.DEFAULT_TOLERANCE, and driftless's
HUBSPOT_TOLERANCE_MS = 5 * 60 * 1000
STRIPE_PATH = "/webhooks/stripe"
HUBSPOT_PATH = "/webhooks/hubspot"


def stripe_event(event_id, now_s, customer_id, contact_id, email):
    """A `customer.updated` event shaped like the ones Stripe sends (API 2024-06-20)."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": now_s,
        "data": {
            "object": {
                "id": customer_id,
                "object": "customer",
                "address": None,
                "balance": 0,
                "created": now_s - 3600,
                "currency": None,
                "default_source": None,
                "delinquent": False,
                "description": "Zoë Ångström — signed by stripe-python",
                "discount": None,
                "email": email,
                "invoice_prefix": "7C1A2B3D",
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": {
                    "driftless_crm_contact_id": contact_id,
                    "lifecycle_stage": "lead",
                },
                "name": None,
                "next_invoice_sequence": 1,
                "phone": None,
                "preferred_locales": [],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": None,
            },
            "previous_attributes": {"description": None},
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.updated",
    }


def stripe_body(event):
    # Stripe delivers pretty-printed JSON; the signature covers these exact bytes.
    return json.dumps(event, indent=2, ensure_ascii=False)


def hubspot_body(first_event_id, now_ms, contact_id, email):
    """A contact.propertyChange batch shaped like the ones HubSpot sends (compact JSON array)."""
    common = {
        "subscriptionId": 2_871_531,
        "portalId": 62_515,
        "appId": 1_160_452,
        "occurredAt": now_ms - 1500,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": int(contact_id),
        "changeSource": "CRM_UI",
        "sourceId": "userId:4810431",
    }
    events = [
        dict(common, eventId=first_event_id, propertyName="email", propertyValue=email),
        dict(common, eventId=first_event_id + 1, propertyName="lifecyclestage", propertyValue="lead"),
    ]
    return json.dumps(events, separators=(",", ":"), ensure_ascii=False)


def stripe_verdict(body, header, secret):
    """What stripe-python's own verification says about this delivery."""
    try:
        event = stripe.Webhook.construct_event(body, header, secret, tolerance=STRIPE_TOLERANCE_S)
    except stripe.SignatureVerificationError as e:
        return "reject", str(e)
    return "accept", f"construct_event -> {event.type} {event.id}"


def hubspot_verdict(body, headers, secret, uri):
    """What hubspot-api-client's own verification says (the receiver's URI, POST)."""
    try:
        ok = Signature.is_valid(
            signature=headers["X-HubSpot-Signature-v3"],
            client_secret=secret,
            request_body=body,
            http_uri=uri,
            http_method="POST",
            signature_version="v3",
            timestamp=headers["X-HubSpot-Request-Timestamp"],
        )
    except InvalidSignatureTimestampError as e:
        return "reject", str(e)
    return ("accept", "is_valid -> True") if ok else ("reject", "is_valid -> False")


def stripe_vectors(a, now_s, fresh_id):
    secret, wrong = a.stripe_secret, "whsec_" + rnd.token_hex(16)
    out = []

    def add(name, body, header, secret_used, expect, code, reason, event_id):
        verdict, detail = stripe_verdict(body, header, secret)
        out.append(
            {
                "system": "stripe",
                "name": name,
                "method": "POST",
                "path": STRIPE_PATH,
                "uri": None,
                "body": body,
                "headers": {
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    "Stripe-Signature": header,
                },
                "secret_used": secret_used,
                "expect": expect,
                "code": code,
                "reason": reason,
                "event_ids": [event_id],
                "sdk_verdict": verdict,
                "sdk_detail": detail,
            }
        )

    def event(t):
        eid = fresh_id()
        return eid, stripe_body(stripe_event(eid, t, a.customer_id, a.contact_id, a.email))

    sign = stripe.WebhookSignature.generate_signature_header

    eid, body = event(now_s)
    add("valid", body, sign(body, secret, timestamp=now_s), "configured", "accept", None,
        "signed now with the endpoint's secret", eid)

    eid, body = event(now_s - 240)
    add("valid_within_tolerance", body, sign(body, secret, timestamp=now_s - 240), "configured",
        "accept", None, "signed 240 s ago, inside the 300 s tolerance", eid)

    # Secret rotation: Stripe sends one v1 per live secret (plus a v0 in test mode); any
    # matching v1 is enough.
    eid, body = event(now_s)
    t = now_s
    old = stripe.WebhookSignature._compute_signature(f"{t}.{body}", wrong)
    cur = stripe.WebhookSignature._compute_signature(f"{t}.{body}", secret)
    add("valid_rolled_secret_and_v0", body, f"t={t},v1={old},v1={cur},v0={rnd.token_hex(32)}",
        "configured+expired", "accept", None,
        "two v1 signatures (expired secret first) and a v0: one v1 matches", eid)

    eid, body = event(now_s)
    header = sign(body, secret, timestamp=now_s)
    tampered = body.replace(a.email, "attacker@evil.test", 1)
    assert tampered != body
    add("tampered_body", tampered, header, "configured", "reject", "bad_signature",
        "body changed after signing (email swapped)", eid)

    eid, body = event(now_s)
    add("wrong_secret", body, sign(body, wrong, timestamp=now_s), "wrong", "reject", "bad_signature",
        "signed with a secret that is not the endpoint's", eid)

    stale_t = now_s - STRIPE_TOLERANCE_S - 30
    eid, body = event(stale_t)
    add("stale_timestamp", body, sign(body, secret, timestamp=stale_t), "configured", "reject",
        "stale_timestamp", "correctly signed 330 s ago: outside the 300 s tolerance", eid)

    eid, body = event(stale_t)
    replayed = sign(body, secret, timestamp=stale_t).replace(f"t={stale_t},", f"t={now_s},", 1)
    add("replay_with_fresh_timestamp", body, replayed, "configured", "reject", "bad_signature",
        "a stale delivery whose t= was rewritten to now: the signature covers t", eid)
    return out


def hubspot_vectors(a, now_ms, fresh_n):
    secret, wrong = a.hubspot_secret, rnd.token_hex(16)
    out = []

    def add(name, body, uri_signed, ts, key, secret_used, expect, code, reason, ids, signed_body=None):
        sig = Signature.get_signature(
            key, signed_body if signed_body is not None else body, "v3",
            http_uri=uri_signed, http_method="POST", timestamp=str(ts),
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
            "X-HubSpot-Signature-Version": "v1",
            # HubSpot still sends the v1 header alongside v3; driftless reads only v3.
            "X-HubSpot-Signature": Signature.get_signature(key, body, "v1"),
            "X-HubSpot-Signature-v3": sig,
            "X-HubSpot-Request-Timestamp": str(ts),
        }
        verdict, detail = hubspot_verdict(body, headers, secret, a.hubspot_uri)
        out.append(
            {
                "system": "hubspot",
                "name": name,
                "method": "POST",
                "path": HUBSPOT_PATH,
                "uri": uri_signed,
                "body": body,
                "headers": headers,
                "secret_used": secret_used,
                "expect": expect,
                "code": code,
                "reason": reason,
                "event_ids": [str(i) for i in ids],
                "sdk_verdict": verdict,
                "sdk_detail": detail,
            }
        )

    def batch():
        n = fresh_n()
        return [n, n + 1], hubspot_body(n, now_ms, a.contact_id, a.email)

    uri = a.hubspot_uri
    ids, body = batch()
    add("valid", body, uri, now_ms, secret, "configured", "accept", None,
        "signed now over POST + the receiver's URI + body + timestamp", ids)

    ids, body = batch()
    ts = now_ms - 4 * 60 * 1000
    add("valid_within_tolerance", body, uri, ts, secret, "configured", "accept", None,
        "signed 4 min ago, inside the 5 min tolerance", ids)

    ids, body = batch()
    tampered = body.replace('"propertyValue":"lead"', '"propertyValue":"customer"', 1)
    assert tampered != body
    add("tampered_body", tampered, uri, now_ms, secret, "configured", "reject", "bad_signature",
        "body changed after signing (lifecyclestage lead -> customer)", ids, signed_body=body)

    ids, body = batch()
    add("wrong_secret", body, uri, now_ms, wrong, "wrong", "reject", "bad_signature",
        "signed with a client secret that is not the app's", ids)

    ids, body = batch()
    stale = now_ms - HUBSPOT_TOLERANCE_MS - 30_000
    add("stale_timestamp", body, uri, stale, secret, "configured", "reject", "stale_timestamp",
        "correctly signed 5 min 30 s ago (ms timestamp): outside the 5 min tolerance", ids)

    for other in a.hubspot_wrong_uri:
        ids, body = batch()
        add("other_uri", body, other, now_ms, secret, "configured", "reject", "bad_signature",
            f"signed for {other}, delivered to {uri}", ids)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stripe-secret", required=True)
    p.add_argument("--hubspot-secret", required=True)
    p.add_argument("--hubspot-uri", required=True,
                   help="the full URI the receiver reconstructs (public_url or http://Host + path)")
    p.add_argument("--hubspot-wrong-uri", action="append", default=[],
                   help="a URI that is not the receiver's (repeatable); signed otherwise correctly")
    p.add_argument("--now-ms", type=int, required=True)
    p.add_argument("--contact-id", required=True, help="numeric HubSpot contact id")
    p.add_argument("--customer-id", required=True, help="Stripe customer id (cus_...)")
    p.add_argument("--email", required=True)
    a = p.parse_args()

    now_s = a.now_ms // 1000
    tag = rnd.token_hex(6)
    counter = [0]

    def fresh_id():
        counter[0] += 1
        return f"evt_sdk{tag}{counter[0]:02d}"

    base = int(a.now_ms) * 100

    def fresh_n():
        counter[0] += 2
        return base + counter[0]

    vectors = stripe_vectors(a, now_s, fresh_id) + hubspot_vectors(a, a.now_ms, fresh_n)
    disagree = [v["system"] + "/" + v["name"] for v in vectors if v["sdk_verdict"] != v["expect"]]
    json.dump(
        {
            "sdk": {"stripe": version("stripe"), "hubspot-api-client": version("hubspot-api-client")},
            "vectors": vectors,
        },
        sys.stdout,
        ensure_ascii=False,
        indent=1,
    )
    sys.stdout.write("\n")
    if disagree:
        print(f"the SDKs' own verification disagrees with the expected verdict: {disagree}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
