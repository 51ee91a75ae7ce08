import itertools

import pytest

from orders_contract.lifecycle import ALLOWED_FROM, TIME_FIELD, can_transition
from orders_contract.models import OrderStatus as S

ALLOWED = {
    (S.PLACED, S.PROCESSING),
    (S.PROCESSING, S.COMPLETED),
    (S.PLACED, S.CANCELLED),
    (S.PROCESSING, S.FAILED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_only_the_lifecycles_arrows_are_allowed(current: S, target: S) -> None:
    assert can_transition(current, target) == ((current, target) in ALLOWED)


def test_final_statuses_never_change() -> None:
    for status in S:
        if status.is_final:
            assert not any(status in sources for sources in ALLOWED_FROM.values())


def test_every_status_records_its_time() -> None:
    assert set(TIME_FIELD) == set(S)
    assert TIME_FIELD[S.PROCESSING] == "processedAt"
    assert TIME_FIELD[S.COMPLETED] == "completedAt"
