"""`compare` in Python: who of the license holders is missing from Procore.

The built-in matches a person's key (mail, else userPrincipalName) against
each Procore user's login and email address. This variant also matches the
person's second address, the userPrincipalName, so someone whose Procore
login is their UPN while Graph lists their mail is found, not created twice.
Its output has the built-in's shape (missing, present, present_inactive,
counts), plus `matched_by_upn`: the keys found only through the UPN.

It keeps no managed people, so it finds no leavers and no returners: it
takes the built-in's lifecycle inputs (license_groups, unlisted_joiners,
disabled, disabled_ids, gone, managed_domains, leaver_grace,
creates_rejected, rejected, approved, project_id) and answers empty lists
and an open guard, so the shipped
flow's deactivate, reactivate and project steps have nothing to do.
"""

import json

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

VERSION = "0.1.0"

PERSON = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string"},
        "mail": {"type": ["string", "null"]},
        "userPrincipalName": {"type": ["string", "null"]},
    },
}
INPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["people", "procore_users"],
    "additionalProperties": False,
    "properties": {
        "people": {"type": "array", "items": PERSON},
        # The built-in's lifecycle inputs: taken, not used.
        "license_groups": {"type": ["integer", "null"]},
        "unlisted_joiners": {"type": "integer"},
        "disabled": {"type": "array", "items": {"type": "string"}},
        "disabled_ids": {"type": "object", "additionalProperties": {"type": "string"}},
        "gone": {"type": "array", "items": {"type": "string"}},
        "managed_domains": {"type": "array", "items": {"type": "string"}},
        "leaver_grace": {"type": ["string", "null"]},
        # Keys whose deactivation an admin rejected or approved.
        "rejected": {"type": "array", "items": {"type": "string"}},
        "approved": {"type": "array", "items": {"type": "string"}},
        # Keys whose creation an admin rejected.
        "creates_rejected": {"type": "array", "items": {"type": "string"}},
        # The flow's Procore project ("" when it has none).
        "project_id": {"type": ["integer", "string", "null"]},
        "procore_users": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": ["integer", "string"]},
                    "login": {"type": ["string", "null"]},
                    "email_address": {"type": ["string", "null"]},
                    "is_active": {"type": "boolean"},
                },
            },
        },
    },
}
OUTPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["missing", "present", "present_inactive", "counts", "matched_by_upn"],
    "properties": {
        "missing": {"type": "array", "items": PERSON},
        "present": {"type": "array"},
        "present_inactive": {"type": "array"},
        "counts": {"type": "object"},
        "matched_by_upn": {"type": "array", "items": {"type": "string"}},
        "adopted": {"type": "array"},
        "leavers": {"type": "array"},
        "leaving": {"type": "array"},
        "returners": {"type": "array"},
        "inactive_unmanaged": {"type": "array"},
        "known_as": {"type": "array"},
        "project_owed": {"type": "array"},
        "rejected_too_late": {"type": "array"},
        "guard": {
            "type": "object",
            "properties": {
                "hold": {"type": "boolean"},
                "reason": {"type": "string"},
                "deactivate": {"type": "boolean"},
            },
        },
    },
}


def key_of(text):
    """The identity rule: trimmed, without case; empty is no key."""
    if not isinstance(text, str):
        return None
    text = text.strip().lower()
    return text or None


def index(users):
    """Every login and email address to its user; active beats inactive."""
    found = {}
    for position, user in enumerate(users):
        candidate = (user["id"], user.get("is_active", True), position)
        for field in ("login", "email_address"):
            key = key_of(user.get(field))
            if key is None:
                continue
            held = found.setdefault(key, candidate)
            if candidate[1] and not held[1]:
                found[key] = candidate
    return found


def compare(people, users):
    by_address = index(users)
    missing, present, inactive, by_upn = [], [], [], []
    matched, seen = set(), set()
    for person in people:
        key = key_of(person.get("key"))
        if key is None or key in seen:
            continue
        seen.add(key)
        hit = by_address.get(key)
        upn = key_of(person.get("userPrincipalName"))
        if hit is None and upn is not None and upn != key:
            hit = by_address.get(upn)
            if hit is not None:
                by_upn.append(key)
        if hit is None:
            missing.append(person)
            continue
        procore_id, active, position = hit
        matched.add(position)
        if active:
            present.append({"key": key, "procore_id": procore_id})
        else:
            inactive.append(dict(person, procore_id=procore_id))
    return {
        "missing": missing,
        "present": present,
        "present_inactive": inactive,
        "counts": {
            "people": len(seen),
            "missing": len(missing),
            "present": len(present),
            "present_inactive": len(inactive),
            "procore_only": len(users) - len(matched),
        },
        "matched_by_upn": by_upn,
        # No managed people: nobody is adopted (the shipped flow's ledger
        # reads this list), leaves or returns through this compare.
        "adopted": [],
        "leavers": [],
        "leaving": [],
        "returners": [],
        "inactive_unmanaged": [],
        "known_as": [],
        "project_owed": [],
        "rejected_too_late": [],
        "guard": {"hold": False, "reason": "", "deactivate": True},
    }


def bad_input(message):
    return Err(types.StepError(kind=types.ErrorKind.BAD_INPUT, code="bad-input", message=message))


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Description:
        return types.Description(
            name="python-compare",
            version=VERSION,
            summary="Who is missing from Procore, also matching the userPrincipalName (Python)",
            input_schema=json.dumps(INPUT_SCHEMA),
            output_schema=json.dumps(OUTPUT_SCHEMA),
            connections=[],
        )

    def run(self, input: str, context: types.RunContext) -> str:
        try:
            data = json.loads(input)
            people, users = data["people"], data["procore_users"]
        except (ValueError, KeyError, TypeError) as e:
            raise bad_input(f"expected {{people, procore_users}}: {e}")
        if not isinstance(people, list) or not isinstance(users, list):
            raise bad_input("people and procore_users must be lists")
        out = compare(people, users)
        # As the built-in: a read that did not say who holds a license
        # (no license group matched, a joiner not listed yet) lets the
        # deactivate step run for nobody, not even someone approved.
        if data.get("license_groups") == 0:
            out["guard"] = {
                "hold": True,
                "reason": "no license group matched the group prefixes, so nobody is deactivated in this run (check the prefixes)",
                "deactivate": False,
            }
        elif data.get("unlisted_joiners", 0) > 0:
            out["guard"]["deactivate"] = False
        return json.dumps(out)
