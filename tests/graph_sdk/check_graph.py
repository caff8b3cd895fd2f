"""Microsoft's Graph SDK for Python (msgraph-sdk) against `sluice emulate`.

Run by tests/graph_sdk.rs with the environment `sluice emulate` prints
(GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, GRAPH_BASE_URL,
GRAPH_TOKEN_URL, REPORT_MAIL_FROM, REPORT_MAIL_TO) and EMULATOR_URL, the
emulator's root, whose /_admin/state is the emulator's own account of the
tenant. Every answer the SDK parses is compared with that state; the first
mismatch ends the script with status 1 and says what differed. With
--expect-faults the emulator injects 429s and 503s and empty first pages:
the SDK's retry handler must ride them out (the script never retries), and
the request log must show that faults were injected.

Two things the SDK cannot do against an emulator, so the script does them:
- its Azure Identity credentials refuse an http:// authority, so the script
  fetches the client-credentials token itself and gives the SDK a bearer
  provider that hands it out;
- msgraph-core's PageIterator stops at an empty page even when the page
  carries an @odata.nextLink (Graph allows such pages), so the script
  follows @odata.nextLink itself through each request builder's with_url.
"""

import asyncio
import json
import os
import sys
import uuid

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.groups.item.members.members_request_builder import (
    MembersRequestBuilder,
)
from msgraph.generated.groups.item.transitive_members.transitive_members_request_builder import (
    TransitiveMembersRequestBuilder,
)
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.device import Device
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.group import Group
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.models.user import User
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)

# The shipped flow's license group prefixes (an EN DASH, not a hyphen).
LICENSE_PREFIXES = ["License – Microsoft", "License – Office"]
USER_FIELDS = ["id", "displayName", "mail", "userPrincipalName", "accountEnabled"]
# Small pages, so every listing takes several and its nextLinks are followed.
PAGE = 7
MODEL_KINDS = {User: "user", Group: "group", Device: "device", ServicePrincipal: "servicePrincipal"}


class Mismatch(Exception):
    """The SDK read something other than what the emulator holds."""


def check(condition, what):
    if not condition:
        raise Mismatch(what)


class IssuedToken(AccessTokenProvider):
    """Hands the SDK a token fetched beforehand, for the emulator's host only."""

    def __init__(self, token, host):
        self.token = token
        self.hosts = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return self.token

    def get_allowed_hosts_validator(self):
        return self.hosts


class Run:
    """One pass of every check, and what it saw."""

    def __init__(self, env, http):
        self.env = env
        self.http = http
        self.calls = {}

    def count(self, call):
        self.calls[call] = self.calls.get(call, 0) + 1

    async def state(self):
        r = await self.http.get(f"{self.env['EMULATOR_URL']}/_admin/state")
        r.raise_for_status()
        return r.json()

    async def token(self):
        r = await self.http.post(
            self.env["GRAPH_TOKEN_URL"],
            data={
                "grant_type": "client_credentials",
                "client_id": self.env["GRAPH_CLIENT_ID"],
                "client_secret": self.env["GRAPH_CLIENT_SECRET"],
                "scope": "https://graph.microsoft.com/.default",
            },
        )
        check(r.status_code == 200, f"token endpoint answered {r.status_code}")
        body = r.json()
        check(body.get("token_type") == "Bearer", f"token_type {body.get('token_type')!r}")
        return body["access_token"]

    def client(self, token):
        host = httpx.URL(self.env["GRAPH_BASE_URL"]).host
        adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(IssuedToken(token, host)))
        adapter.base_url = self.env["GRAPH_BASE_URL"]
        return GraphServiceClient(request_adapter=adapter)


async def every_page(builder, config):
    """Every item of a listing: the first page, then each @odata.nextLink,
    followed verbatim even past an empty page. Returns the items and the
    first page (for @odata.count)."""
    first = await builder.get(config)
    items, page = list(first.value or []), first
    while page.odata_next_link:
        headers_only = RequestConfiguration()
        headers_only.headers = config.headers
        page = await builder.with_url(page.odata_next_link).get(headers_only)
        items.extend(page.value or [])
    return items, first


def walk(state, group_id, transitive):
    """A group's members as the emulator holds them (nested groups' members
    too when transitive), each object once, missing objects left out."""
    groups = {g["id"]: g for g in state["scenario"]["groups"]}
    users = {u["id"] for u in state["scenario"]["graph_users"]}
    seen, out, visited, stack = set(), [], set(), [groups[group_id]]
    while stack:
        g = stack.pop()
        if g["id"] in visited:
            continue
        visited.add(g["id"])
        for m in g["members"]:
            if m["type"] == "user" and m["id"] not in users:
                continue
            if m["type"] == "group":
                if m["id"] not in groups:
                    continue
                if transitive:
                    stack.append(groups[m["id"]])
            if m["id"] not in seen:
                seen.add(m["id"])
                out.append((m["id"], m["type"]))
    return out


def check_user_model(model, user):
    """A User model against the emulator's user, field by field."""
    expected = {
        "display_name": user["display_name"],
        "mail": user["mail"],
        "user_principal_name": user["user_principal_name"],
        "account_enabled": user["account_enabled"],
    }
    got = {k: getattr(model, k) for k in expected}
    check(got == expected, f"user {model.id}: the SDK read {got}, the emulator holds {expected}")


async def check_groups(run, client, state):
    """groups.get with the en-dash startswith filter and $select."""
    prefix_filter = " or ".join(f"startswith(displayName,'{p}')" for p in LICENSE_PREFIXES)
    query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
        filter=prefix_filter, select=["id", "displayName"], top=2
    )
    groups, _ = await every_page(client.groups, RequestConfiguration(query_parameters=query))
    run.count("groups.get(filter=startswith…, select, top)")
    expected = sorted(
        g["id"]
        for g in state["scenario"]["groups"]
        if any(g["display_name"].lower().startswith(p.lower()) for p in LICENSE_PREFIXES)
    )
    check(sorted(g.id for g in groups) == expected, "the filtered groups differ from the emulator's")
    check(all(isinstance(g, Group) for g in groups), "groups parse as Group models")
    names = {g["id"]: g["display_name"] for g in state["scenario"]["groups"]}
    check(all(g.display_name == names[g.id] for g in groups), "group displayName differs")
    check(all(g.mail_enabled is None for g in groups), "$select left out unselected properties")
    # The flow's own, exact re-check of the prefix keeps only these.
    licensed = [g for g in groups if any(g.display_name.startswith(p) for p in LICENSE_PREFIXES)]
    check(len(licensed) >= 2, "at least two license groups")
    look_alikes = [g["id"] for g in state["scenario"]["groups"] if g["display_name"].startswith("License - ")]
    check(look_alikes, "the tenant has a group named with a hyphen instead of the en dash")
    check(not {g.id for g in groups} & set(look_alikes), "the hyphen look-alike is not listed")
    one = await client.groups.by_group_id(licensed[0].id).get()
    run.count("groups.by_group_id(id).get()")
    check(one.display_name == licensed[0].display_name, "group by id")
    return licensed


async def check_members(run, client, state, group, transitive):
    """members (or transitiveMembers).get with $select: every member's model
    type and every user's fields against the emulator's state."""
    if transitive:
        builder = client.groups.by_group_id(group.id).transitive_members
        params = TransitiveMembersRequestBuilder.TransitiveMembersRequestBuilderGetQueryParameters
    else:
        builder = client.groups.by_group_id(group.id).members
        params = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters
    query = params(select=USER_FIELDS, top=PAGE)
    members, _ = await every_page(builder, RequestConfiguration(query_parameters=query))
    name = "transitive_members" if transitive else "members"
    run.count(f"groups.by_group_id(id).{name}.get(select, top) + with_url(nextLink)")
    got = [(m.id, MODEL_KINDS.get(type(m), type(m).__name__)) for m in members]
    expected = walk(state, group.id, transitive)
    check(
        sorted(got) == sorted(expected),
        f"{name} of {group.display_name}: the SDK read {len(got)} members, the emulator holds {len(expected)}",
    )
    users = {u["id"]: u for u in state["scenario"]["graph_users"]}
    for m in members:
        if isinstance(m, User):
            check_user_model(m, users[m.id])
    return members


async def check_advanced_queries(run, client, state, group):
    """$count and $filter on members, with and without ConsistencyLevel."""
    builder = client.groups.by_group_id(group.id).members
    params = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters
    config = RequestConfiguration(
        query_parameters=params(count=True, filter="accountEnabled eq true", select=USER_FIELDS, top=PAGE)
    )
    config.headers.add("ConsistencyLevel", "eventual")
    enabled, first = await every_page(builder, config)
    run.count("members.get(count=True, filter='accountEnabled eq true') + ConsistencyLevel: eventual")
    users = {u["id"]: u for u in state["scenario"]["graph_users"]}
    expected = [
        (i, k)
        for i, k in walk(state, group.id, False)
        if k != "user" or users[i]["account_enabled"]
    ]
    expected = [(i, k) for i, k in expected if k != "group"]
    got = [(m.id, MODEL_KINDS.get(type(m))) for m in enabled]
    check(sorted(got) == sorted(expected), f"filtered members differ: {len(got)} read, {len(expected)} expected")
    check(first.odata_count == len(expected), f"@odata.count {first.odata_count}, expected {len(expected)}")
    plain = RequestConfiguration(query_parameters=params(filter="accountEnabled eq true"))
    await expect_error(run, "members.get(filter) without ConsistencyLevel", builder.get(plain), 400, "Request_UnsupportedQuery")


async def expect_error(run, call, awaitable, status, code):
    """The call fails with an ODataError carrying this status and code."""
    run.count(call)
    try:
        await awaitable
    except ODataError as e:
        check(e.response_status_code == status, f"{call}: status {e.response_status_code}, expected {status}")
        check(e.error is not None and e.error.code == code, f"{call}: code {e.error and e.error.code}, expected {code}")
        check(bool(e.error.message), f"{call}: the error has a message")
        return
    raise Mismatch(f"{call} did not fail")


async def check_errors(run, client, group):
    missing = "00000000-0000-4000-8000-000000000000"
    await expect_error(run, "groups.by_group_id(unknown).get()", client.groups.by_group_id(missing).get(), 404, "Request_ResourceNotFound")
    await expect_error(run, "users.by_user_id(unknown).get()", client.users.by_user_id(missing).get(), 404, "Request_ResourceNotFound")
    await expect_error(run, "applications.get() (not emulated)", client.applications.get(), 400, "BadRequest")
    params = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters
    bad_select = RequestConfiguration(query_parameters=params(select=["id", "favouriteColour"]))
    await expect_error(run, "members.get(select=[unknown property])", client.groups.by_group_id(group.id).members.get(bad_select), 400, "Request_BadRequest")


async def check_mail(run, client, env, http):
    """users.by_user_id(sender).send_mail.post: 202, and the emulator has it."""
    subject = f"Sluice SDK check {uuid.uuid4()}"
    body = SendMailPostRequestBody(
        message=Message(
            subject=subject,
            body=ItemBody(content_type=BodyType.Html, content="<p>sent by msgraph-sdk</p>"),
            to_recipients=[Recipient(email_address=EmailAddress(address=env["REPORT_MAIL_TO"]))],
        ),
        save_to_sent_items=False,
    )
    await client.users.by_user_id(env["REPORT_MAIL_FROM"]).send_mail.post(body)
    run.count("users.by_user_id(sender).send_mail.post(Message, SaveToSentItems)")
    mails = [m for m in (await run.state())["mails"] if m["subject"] == subject]
    check(len(mails) == 1, f"the emulator recorded {len(mails)} mails with the SDK's subject")
    check(mails[0]["to"] == [env["REPORT_MAIL_TO"]], f"recipients {mails[0]['to']}")
    check(mails[0]["html"] == "<p>sent by msgraph-sdk</p>", "mail body")
    await expect_error(run, "users.by_user_id(unknown).send_mail.post()", client.users.by_user_id("nobody@example.com").send_mail.post(body), 404, "ErrorInvalidUser")


async def main(expect_faults):
    env = os.environ
    async with httpx.AsyncClient(timeout=60) as http:
        run = Run(env, http)
        token = await run.token()
        client = run.client(token)
        state = await run.state()
        licensed = await check_groups(run, client, state)
        members = 0
        for group in licensed:
            members += len(await check_members(run, client, state, group, transitive=False))
            await check_members(run, client, state, group, transitive=True)
        await check_advanced_queries(run, client, state, licensed[0])
        upn = state["scenario"]["graph_users"][1]["user_principal_name"]
        user = await client.users.by_user_id(upn).get()
        run.count("users.by_user_id(upn).get()")
        check(user.user_principal_name == upn, "user by principal name")
        await check_mail(run, client, env, http)
        await check_errors(run, client, licensed[0])
        await expect_error(run, "groups.get() with a token the emulator never issued", run.client("forged").groups.get(), 401, "InvalidAuthenticationToken")
        log = (await run.state())["requests"]
        faulted = [r for r in log if r["fault"]]
        if expect_faults:
            check(faulted, "faults were asked for, and none was injected")
        else:
            check(not faulted, f"{len(faulted)} faults injected in a run without faults")
        print(json.dumps({
            "license_groups": len(licensed),
            "members_read": members,
            "requests": len(log),
            "faults_ridden_out": len(faulted),
            "calls": run.calls,
        }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    try:
        asyncio.run(main("--expect-faults" in sys.argv[1:]))
    except Mismatch as e:
        print(f"mismatch: {e}", file=sys.stderr)
        sys.exit(1)
