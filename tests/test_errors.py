"""errors.Refusal is an ordinary exception: raised through a context manager, pickled, sent between processes."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest

from mssante_base.errors import Refusal

REFUSAL = Refusal(550, "5.7.1", "Relaying denied", check="recipient_domain")


@contextlib.contextmanager
def _scope() -> Iterator[None]:
    yield


def _refuse(code: int) -> None:
    raise Refusal(code, f"{str(code)[0]}.3.0", "refused in another process", check="worker")


def test_a_refusal_raised_inside_a_context_manager_comes_out_as_itself():
    with pytest.raises(Refusal) as caught, _scope():
        raise REFUSAL
    assert caught.value is REFUSAL and caught.value.__traceback__ is not None


def test_a_refusal_survives_pickling_with_every_field():
    copy = pickle.loads(pickle.dumps(REFUSAL))
    assert (copy.code, copy.enhanced, copy.text, copy.check) == (550, "5.7.1", "Relaying denied", "recipient_domain")
    assert copy == REFUSAL and copy.reply == "550 5.7.1 Relaying denied" and str(copy) == copy.reply


def test_a_refusal_raised_in_a_worker_process_reaches_the_caller():
    with ProcessPoolExecutor(max_workers=1) as pool, pytest.raises(Refusal) as caught:
        pool.submit(_refuse, 451).result()
    assert caught.value.reply == "451 4.3.0 refused in another process" and caught.value.temporary
    assert caught.value.check == "worker"


def test_a_refusal_is_read_only_and_compares_by_its_reply():
    with pytest.raises(AttributeError):
        REFUSAL.code = 421  # type: ignore[misc]
    assert Refusal(550, "5.7.1", "Relaying denied") == REFUSAL  # the check that made it is not the reply
    assert hash(REFUSAL) == hash(Refusal(550, "5.7.1", "Relaying denied"))
    assert Refusal(550, "5.7.1", "Relaying denied here") != REFUSAL
    assert Refusal(451, "4.3.0", "later").check == ""
