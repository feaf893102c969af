"""The drop-in: which requests it takes from the operator's routing, and its recipe
(docs/dropin.md) applied to the pristine stock configuration."""

from __future__ import annotations

import hashlib

import pytest

from statestore import dropin_recipe
from statestore.domain.dropin import DropinFacts, DropinStep, dropin_step
from statestore.dropin_recipe import Addition, RecipeError, added_lines, additions, apply

S, P, TRACK, PASS, RE, REG = (DropinStep.SUBSCRIBE, DropinStep.PUBLISH, DropinStep.TRACK_CALL, DropinStep.PASS,
                              DropinStep.RESUBSCRIBE, DropinStep.RECORD_REGISTER)


@pytest.mark.parametrize(
    ("method", "in_dialog", "event", "served", "step"),
    [
        ("SUBSCRIBE", False, "dialog", True, S),
        ("SUBSCRIBE", False, "Dialog;id=7", True, S),
        ("SUBSCRIBE", False, "presence", True, S),
        ("SUBSCRIBE", False, "reg", True, S),
        ("SUBSCRIBE", False, "dialog.winfo", True, S),
        ("SUBSCRIBE", False, "dialog", False, PASS),  # another domain: the operator's
        ("SUBSCRIBE", False, "message-summary", True, PASS),  # another package: the operator's
        ("SUBSCRIBE", False, None, True, PASS),
        ("SUBSCRIBE", True, "dialog", True, RE),
        ("SUBSCRIBE", True, "dialog", False, RE),  # our dialog, whatever the To domain says
        ("SUBSCRIBE", True, "message-summary", True, PASS),
        ("PUBLISH", False, "presence", True, P),
        ("PUBLISH", False, "dialog", True, PASS),  # dialog state comes from calls, not PUBLISH
        ("PUBLISH", False, "presence", False, PASS),
        ("PUBLISH", False, "message-summary", True, PASS),
        ("PUBLISH", False, "dialog.winfo", True, PASS),  # not publishable
        ("INVITE", False, None, True, TRACK),
        ("invite", False, None, True, TRACK),
        ("INVITE", False, None, False, PASS),  # not a domain of ours: not tracked
        ("INVITE", True, None, True, PASS),  # a re-INVITE follows the operator's routing
        ("BYE", True, None, True, PASS),  # observed after the operator's loose_route
        ("REGISTER", False, None, True, REG),  # recorded, then the operator's registrar saves it
        ("REGISTER", False, None, False, PASS),
        ("OPTIONS", False, None, True, PASS),
        ("MESSAGE", False, None, True, PASS),
        ("NOTIFY", True, "dialog", True, PASS),
        ("CANCEL", False, None, True, PASS),
        ("ACK", True, None, True, PASS),
    ],
)
def test_the_dropin_takes_only_what_blf_answers_or_observes(
    method: str, in_dialog: bool, event: str | None, served: bool, step: DropinStep
) -> None:
    assert dropin_step(DropinFacts(method, in_dialog, event, served)) is step


@pytest.mark.parametrize(
    ("method", "in_dialog", "served", "step"),
    [
        ("INVITE", False, True, DropinStep.RELAY_TO_FLOW),  # not tracked a second time here
        ("INVITE", False, False, DropinStep.RELAY_TO_FLOW),
        ("MESSAGE", False, True, DropinStep.RELAY_TO_FLOW),
        ("INVITE", True, True, PASS),  # in dialog: the operator's loose_route
        ("SUBSCRIBE", False, True, S),  # only calls and messages are relayed to flows
        ("REGISTER", False, True, REG),
    ],
)
def test_another_instances_relay_to_a_flow_we_hold_is_relayed_there(
    method: str, in_dialog: bool, served: bool, step: DropinStep
) -> None:
    event = "dialog" if method == "SUBSCRIBE" else None
    assert dropin_step(DropinFacts(method, in_dialog, event, served, flow_routed=True)) is step


@pytest.mark.parametrize(
    ("method", "event", "served", "step"),
    [
        ("SUBSCRIBE", "dialog", False, S),  # sip:alice@<server address>: the watcher's domain
        ("SUBSCRIBE", "message-summary", False, PASS),
        ("INVITE", None, False, PASS),  # calls to the server's address stay the operator's
        ("REGISTER", None, False, PASS),
        ("PUBLISH", "presence", False, PASS),
    ],
)
def test_only_a_subscribe_to_the_servers_own_address_is_ours(
    method: str, event: str | None, served: bool, step: DropinStep
) -> None:
    assert dropin_step(DropinFacts(method, False, event, served, to_us=True)) is step


@pytest.mark.parametrize(("in_dialog", "step"), [(True, PASS), (False, S)])
def test_a_subscribe_routed_on_beyond_us_is_the_operators_once_in_dialog(in_dialog: bool, step: DropinStep) -> None:
    assert dropin_step(DropinFacts("SUBSCRIBE", in_dialog, "dialog", True, routed_on=True)) is step


def test_publish_of_a_package_that_cannot_be_published_is_not_ours() -> None:
    assert dropin_step(DropinFacts("PUBLISH", False, "reg", True)) is PASS


# --- the recipe -------------------------------------------------------------------------------

PAGE = dropin_recipe.DOCS_PAGE.read_text()
STOCK = dropin_recipe.STOCK_CONFIG.read_text()
# /etc/kamailio/kamailio.cfg of Debian 12's kamailio 5.6.3-2, unmodified.
STOCK_SHA256 = "6a79e3a2863a7dda991b2ec2760066f833f931b5414aebab792161deb7e0519b"


def test_the_pristine_stock_copy_is_debians_5_6_3_file() -> None:
    lines = STOCK.splitlines()
    assert len(lines) == 1060
    assert lines[2] == "# Kamailio SIP Server v5.6 - default configuration script"
    assert hashlib.sha256(STOCK.encode()).hexdigest() == STOCK_SHA256
    assert not any(line.startswith("#!define WITH_") for line in lines)


def test_the_recipe_adds_one_include_and_at_most_ten_lines() -> None:
    recipe = additions(PAGE)
    includes = [addition for addition in recipe if addition.is_include]
    assert len(includes) == 1 and includes[0].lines == ('include_file "blf.cfg"',)
    assert 1 <= added_lines(recipe) <= dropin_recipe.MAX_ADDED_LINES


def test_every_anchor_is_in_the_stock_configuration_exactly_once() -> None:
    stock = [line.strip() for line in STOCK.splitlines()]
    for addition in additions(PAGE):
        assert stock.count(addition.anchor) == 1, addition.anchor


def test_the_recipe_puts_each_addition_right_after_its_anchor() -> None:
    recipe = additions(PAGE)
    built = apply(STOCK, recipe).splitlines()
    assert len(built) == len(STOCK.splitlines()) + sum(len(addition.lines) for addition in recipe)
    for addition in recipe:
        at = [line.strip() for line in built].index(addition.anchor)
        assert tuple(built[at + 1:at + 1 + len(addition.lines)]) == addition.lines
    assert built.index('include_file "blf.cfg"') < built.index("request_route {")
    request_route = built[built.index("request_route {"):built.index("route[RELAY] {")]
    assert '\tpython_exec("blf_request");' in request_route


def test_the_entry_points_the_recipe_calls_exist_in_the_kemi_script() -> None:
    script = (dropin_recipe.ROOT / "kemi" / "blf_kemi.py").read_text()
    called = [line.strip() for addition in additions(PAGE) for line in addition.lines if "python_exec" in line]
    assert called
    for line in called:
        method = line.split('"')[1]
        assert f"def {method}(self, msg: object) -> int:" in script


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("```after\nno such line in the file\n```\n```add\nx\n```\n", "0 times"),
        ("```after\n}\n```\n```add\nx\n```\n", "89 times"),
    ],
)
def test_an_anchor_missing_or_not_unique_fails_loudly(page: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(STOCK, additions(page))


@pytest.mark.parametrize(
    "page",
    [
        "```add\nx\n```\n",  # no anchor
        "```after\nrequest_route {\n```\n",  # no addition
        "```after\nrequest_route {\n```\n```after\nreply_route {\n```\n```add\nx\n```\n",
        "```after\nrequest_route {\nreply_route {\n```\n```add\nx\n```\n",  # two anchor lines
    ],
)
def test_a_malformed_recipe_is_refused(page: str) -> None:
    with pytest.raises(RecipeError):
        additions(page)


def test_comments_and_blank_lines_do_not_count_but_code_does() -> None:
    recipe = [Addition("a", ("# why", "", "\tpython_exec(\"x\");")), Addition("b", ('include_file "blf.cfg"',))]
    assert added_lines(recipe) == 1


def test_the_files_to_copy_are_the_include_and_what_it_includes_beside_it() -> None:
    kamailio = dropin_recipe.ROOT / "kamailio"
    names = ["blf.cfg", "blf-core.cfg", "blf-metrics.cfg"]
    assert dropin_recipe.include_files() == [kamailio / name for name in names]


def test_every_module_the_include_loads_is_guarded_against_a_second_load() -> None:
    for path in dropin_recipe.include_files():
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            if line.startswith("loadmodule"):
                module = line.split('"')[1].removesuffix(".so")
                assert lines[at - 1] == f"#!ifndef MOD_{module}" and lines[at + 1] == "#!endif", (path, line)


def test_both_modes_share_one_copy_of_the_core_settings() -> None:
    kamailio = dropin_recipe.ROOT / "kamailio"
    for config in ("kamailio.cfg", "blf.cfg"):
        text = (kamailio / config).read_text()
        assert 'include_file "blf-core.cfg"' in text.splitlines()
        assert 'modparam("pv", "shvset"' not in text and 'modparam("rtimer"' not in text
