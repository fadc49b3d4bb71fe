"""The server's garbage-collector settings: start-up objects frozen, young objects collected less often."""

import gc

from adaptive_sarathi.server.gc_tuning import YOUNG_THRESHOLD, tune_garbage_collection


def test_tune_garbage_collection_freezes_and_raises_the_threshold():
    before = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
