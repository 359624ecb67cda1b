"""Annotation files: fpgaflow's JSON and Pascal VOC XML, and what is wrong with a broken one."""

from __future__ import annotations

import pytest

from fpgaflow.tasks.detection.annotations import (
    AnnotatedObject,
    Annotation,
    AnnotationError,
    parse_json,
    parse_voc_xml,
    read_annotation,
    write_json,
)

VOC = """<annotation>
  <filename>000005.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>chair</name><difficult>0</difficult>
    <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
  <object><name>chair</name><difficult>1</difficult>
    <bndbox><xmin>5</xmin><ymin>244</ymin><xmax>67</xmax><ymax>374</ymax></bndbox></object>
</annotation>"""


def test_json_round_trip(tmp_path):
    annotation = Annotation(
        160, 120, (AnnotatedObject("cat", (10.0, 20.0, 50.5, 90.0)), AnnotatedObject("dog", (0, 0, 5, 5), True))
    )
    assert read_annotation(write_json(tmp_path / "a.json", annotation)) == annotation


def test_pascal_voc_xml():
    annotation = parse_voc_xml(VOC)
    assert (annotation.width, annotation.height) == (500, 375)
    assert annotation.objects == (
        AnnotatedObject("chair", (263, 211, 324, 339), False),
        AnnotatedObject("chair", (5, 244, 67, 374), True),
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{", "not valid JSON"),
        ("[]", "expected an object with width, height and objects"),
        ('{"width": 10, "objects": []}', "missing keys ['height']"),
        ('{"width": 10, "height": 0, "objects": []}', "height must be a positive whole number"),
        ('{"width": 10, "height": 10, "objects": [{"label": "a"}]}', "objects[0] must be an object with 'label' and 'box'"),
        ('{"width": 10, "height": 10, "objects": [{"label": "a", "box": [1, 2, 3]}]}', "objects[0].box must be a list"),
        (
            '{"width": 10, "height": 10, "objects": [{"label": "", "box": [1, 2, 3, 4]}]}',
            "objects[0].label must be a non-empty string",
        ),
        (
            '{"width": 10, "height": 10, "objects": [{"label": "a", "box": [1, "x", 3, 4]}]}',
            "objects[0].box[1] must be a finite number",
        ),
    ],
)
def test_broken_json_says_what_is_wrong(text, problem):
    with pytest.raises(AnnotationError) as caught:
        parse_json(text)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<annotation>", "not valid XML"),
        ("<picture/>", "expected a Pascal VOC <annotation> root element"),
        ("<annotation><size><width>5</width></size></annotation>", "<size/height> is missing or empty"),
        (VOC.replace("<xmax>324</xmax>", "<xmax>wide</xmax>"), "object 0: <bndbox/xmax> must be a number"),
    ],
)
def test_broken_voc_xml_says_what_is_wrong(text, problem):
    with pytest.raises(AnnotationError) as caught:
        parse_voc_xml(text)
    assert problem in str(caught.value)


def test_unknown_suffix(tmp_path):
    (tmp_path / "a.txt").write_text("cat 1 2 3 4")
    with pytest.raises(AnnotationError, match="unknown annotation format '.txt'"):
        read_annotation(tmp_path / "a.txt")
