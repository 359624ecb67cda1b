"""Annotation files of a detection dataset: fpgaflow's JSON, or Pascal VOC XML.

JSON (``annotations/<image stem>.json``), pixel coordinates of the image as stored::

    {"width": 160, "height": 120,
     "objects": [{"label": "cat", "box": [xmin, ymin, xmax, ymax]},
                 {"label": "dog", "box": [12, 30, 64, 98], "difficult": false}]}

``difficult`` is optional (default false): such objects are neither required nor penalised by the
mAP, as in Pascal VOC. Pascal VOC XML (``annotations/<image stem>.xml``): ``<size>`` gives
``<width>``/``<height>``, each ``<object>`` a ``<name>``, an optional ``<difficult>`` and a
``<bndbox>`` with ``<xmin>``, ``<ymin>``, ``<xmax>``, ``<ymax>``.

Parsing checks the structure only; whether boxes lie inside the image, have an area and name known
labels is for the intake's rules, which report every offending file at once.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ANNOTATION_SUFFIXES = (".json", ".xml")


class AnnotationError(ValueError):
    """An annotation file that does not follow its format; the message names the problem."""


@dataclass(frozen=True)
class AnnotatedObject:
    label: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    difficult: bool = False


@dataclass(frozen=True)
class Annotation:
    width: int
    height: int
    objects: tuple[AnnotatedObject, ...]


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _size(value, what: str) -> int:
    number = _number(value, what)
    if number != int(number) or number < 1:
        raise AnnotationError(f"{what} must be a positive whole number of pixels, got {value!r}")
    return int(number)


def _label(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def parse_json(text: str) -> Annotation:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationError(f"not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise AnnotationError(f"expected an object with width, height and objects, got {type(raw).__name__}")
    missing = [key for key in ("width", "height", "objects") if key not in raw]
    if missing:
        raise AnnotationError(f'missing keys {missing}: expected {{"width", "height", "objects": [{{"label", "box"}}]}}')
    if not isinstance(raw["objects"], list):
        raise AnnotationError(f"objects must be a list, got {type(raw['objects']).__name__}")
    objects = []
    for index, item in enumerate(raw["objects"]):
        where = f"objects[{index}]"
        if not isinstance(item, dict) or "label" not in item or "box" not in item:
            raise AnnotationError(f"{where} must be an object with 'label' and 'box' [xmin, ymin, xmax, ymax]")
        box = item["box"]
        if not isinstance(box, list) or len(box) != 4:
            raise AnnotationError(f"{where}.box must be a list [xmin, ymin, xmax, ymax], got {box!r}")
        difficult = item.get("difficult", False)
        if not isinstance(difficult, bool):
            raise AnnotationError(f"{where}.difficult must be true or false, got {difficult!r}")
        xmin, ymin, xmax, ymax = (_number(value, f"{where}.box[{position}]") for position, value in enumerate(box))
        objects.append(AnnotatedObject(_label(item["label"], f"{where}.label"), (xmin, ymin, xmax, ymax), difficult))
    return Annotation(_size(raw["width"], "width"), _size(raw["height"], "height"), tuple(objects))


def _text(element: ElementTree.Element, path: str) -> str:
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise AnnotationError(f"<{path}> is missing or empty")
    return found.text.strip()


def _xml_number(element: ElementTree.Element, path: str) -> float:
    text = _text(element, path)
    try:
        return _number(float(text), f"<{path}>")
    except ValueError:
        raise AnnotationError(f"<{path}> must be a number, got {text!r}") from None


def parse_voc_xml(text: str) -> Annotation:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise AnnotationError(f"not valid XML: {error}") from None
    if root.tag != "annotation":
        raise AnnotationError(f"expected a Pascal VOC <annotation> root element, got <{root.tag}>")
    width, height = (
        _size(_xml_number(root, "size/width"), "<size/width>"),
        _size(_xml_number(root, "size/height"), "<size/height>"),
    )
    objects = []
    for index, item in enumerate(root.findall("object")):
        try:
            label = _text(item, "name")
            xmin, ymin, xmax, ymax = (_xml_number(item, f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax"))
            difficult = item.find("difficult") is not None and _text(item, "difficult") not in ("0", "false")
        except AnnotationError as error:
            raise AnnotationError(f"object {index}: {error}") from None
        objects.append(AnnotatedObject(label, (xmin, ymin, xmax, ymax), difficult))
    return Annotation(width, height, tuple(objects))


PARSERS = {".json": parse_json, ".xml": parse_voc_xml}


def read_annotation(path: Path) -> Annotation:
    """Parse an annotation file by its suffix; :class:`AnnotationError` names what is wrong."""
    path = Path(path)
    parser = PARSERS.get(path.suffix.lower())
    if parser is None:
        raise AnnotationError(f"unknown annotation format {path.suffix!r}: use {' or '.join(ANNOTATION_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AnnotationError("not UTF-8 text") from None
    return parser(text)


def write_json(path: Path, annotation: Annotation) -> Path:
    objects = [
        {"label": item.label, "box": [round(value, 2) for value in item.box], **({"difficult": True} if item.difficult else {})}
        for item in annotation.objects
    ]
    Path(path).write_text(json.dumps({"width": annotation.width, "height": annotation.height, "objects": objects}) + "\n")
    return Path(path)
