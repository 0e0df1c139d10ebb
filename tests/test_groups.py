"""Class groups: the DB thresholds reproduce the published VOC-LT / COCO-LT splits; the quantile rule."""
import numpy as np
import pytest

from ltjax.data.groups import class_groups


@pytest.mark.parametrize("fixture, sizes", [("voc_lt_meta", (6, 6, 8)), ("coco_lt_meta", (22, 33, 25))])
def test_threshold_groups_reproduce_published_split(fixture, sizes, request):
    meta = request.getfixturevalue(fixture)
    groups = class_groups(meta["class_freq"])
    published = meta["class_split"]
    assert groups["head"].tolist() == sorted(published["head"])
    assert groups["medium"].tolist() == sorted(published["middle"])
    assert groups["tail"].tolist() == sorted(published["tail"])
    assert tuple(groups.sizes().values()) == sizes


def test_threshold_boundaries_are_inclusive_at_head_and_medium():
    # n_c = 100 is head and n_c = 20 is medium (the reference code's >=), 19 is tail.
    groups = class_groups([100, 99, 20, 19, 0])
    assert groups["head"].tolist() == [0]
    assert groups["medium"].tolist() == [1, 2]
    assert groups["tail"].tolist() == [3, 4]
    assert groups.assignment().tolist() == [0, 1, 1, 2, 2]


def test_quantile_groups_cut_sorted_classes_into_thirds():
    counts = np.array([50, 5, 500, 40, 7, 900, 60, 3, 300])
    groups = class_groups(counts, mode="quantile")
    assert groups["tail"].tolist() == [1, 4, 7]  # counts 5, 7, 3
    assert groups["medium"].tolist() == [0, 3, 6]  # 50, 40, 60
    assert groups["head"].tolist() == [2, 5, 8]  # 500, 900, 300


def test_bad_group_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown mode"):
        class_groups([1, 2], mode="median")
    with pytest.raises(ValueError, match="tail_max <= head_min"):
        class_groups([1, 2], head_min=10, tail_max=20)
    with pytest.raises(ValueError, match="1-D"):
        class_groups(np.ones((2, 2)))
