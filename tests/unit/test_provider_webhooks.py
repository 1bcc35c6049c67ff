"""The pure decision of `poller providers webhooks sync` (worker.provider_webhooks.plan_sync)."""

from __future__ import annotations

from worker.provider_webhooks import Remote, Stored, plan_sync

URL = "https://poller.example.com/ingress/billit/default"
OLD = "https://old.example.com/ingress/billit/default"
WANTED = ("Order U", "Message U")


def test_nothing_there_registers_each_topic():
    plan = plan_sync([], [], URL, WANTED, hand_secret=False)
    assert plan.create == ["Order U", "Message U"] and not (plan.keep or plan.adopt or plan.unknown)


def test_ours_are_kept_and_nothing_is_registered_twice():
    listed = [Remote("1", "Order U", URL), Remote("2", "Message U", URL)]
    plan = plan_sync(listed, [Stored("1", URL, True), Stored("2", URL, True)], URL, WANTED, hand_secret=False)
    assert [r.remote_id for r in plan.keep] == ["1", "2"] and plan.create == [] and plan.forget == []


def test_one_found_with_its_secret_is_adopted_and_one_without_is_a_problem():
    listed = [Remote("7", "Order U", URL, secret="s3cr3t"), Remote("8", "Message U", URL)]
    plan = plan_sync(listed, [], URL, WANTED, hand_secret=False)
    assert [r.remote_id for r in plan.adopt] == ["7"] and [r.remote_id for r in plan.unknown] == ["8"]
    assert plan.create == []  # never a second webhook beside one we cannot verify


def test_one_made_by_hand_is_left_to_the_configured_secret():
    plan = plan_sync([Remote("8", "Message U", URL)], [], URL, WANTED, hand_secret=True)
    assert [r.remote_id for r in plan.by_hand] == ["8"] and plan.unknown == [] and plan.create == ["Order U"]


def test_a_new_public_url_moves_ours_and_forgets_the_adopted_and_the_gone():
    listed = [Remote("1", "Order U", OLD), Remote("2", "Message U", OLD), Remote("9", "Order U", "https://other/")]
    stored = [Stored("1", OLD, True), Stored("2", OLD, False), Stored("3", URL, True)]
    plan = plan_sync(listed, stored, URL, WANTED, hand_secret=False)
    assert plan.delete == ["1"]  # made by us: deleted at the provider
    assert sorted(plan.forget) == ["2", "3"]  # adopted (left there), and one the provider no longer has
    assert plan.create == ["Order U", "Message U"]  # a stranger's webhook elsewhere is none of ours
