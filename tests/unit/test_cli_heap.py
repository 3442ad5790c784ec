import gc

from app.serving.uvicorn_server import GC_GEN0_THRESHOLD, settle_heap


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
