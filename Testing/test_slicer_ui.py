"""Static check of the module's .ui against its parameter node (no Qt needed).

The widget binds the parameter node to the widgets whose ``SlicerParameterName`` property
names a parameter (ClinicalFMamba.py, ``_parameterWidgets``). Slicer then picks a GUI
connector by the widget's exact class and the parameter's type; a class it does not support
raises at module start. The supported classes below are those whose connectors accept the
type in every supported release (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py:
QCheckBoxToBoolConnector, QCheckablePushButtonToBoolConnector,
QSliderOrSpinBoxToIntConnector, QDoubleSpinBoxCtkSliderWidgetToFloatConnector,
QComboBoxToStringableConnector, QLineEditToStrConnector, QTextEditPlainTextToStrConnector and
qMRMLNodeComboBoxToNodeConnector at v5.6.2 lines 152-156, 185-189, 221-225, 285-291, 350-356,
444-448, 476-480 and 629-633; the same classes, some accepting more widgets, in v5.8.1 and
v5.10.0).
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "ClinicalFMamba" / "ClinicalFMamba.py"
UI = ROOT / "ClinicalFMamba" / "Resources" / "UI" / "ClinicalFMamba.ui"

SUPPORTED = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSlider", "QSpinBox", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "QComboBox"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "node": {"qMRMLNodeComboBox"},
}


def parameters() -> dict[str, tuple[str, str | None]]:
    """Parameter name -> (base type, Annotated extra such as 'Choice') from the source."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef)
               and node.name == "ClinicalFMambaParameterNode")
    found = {}
    for statement in cls.body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        annotation, extra = statement.annotation, None
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
            base, *extras = annotation.slice.elts
            annotation = base
            extra = ast.unparse(extras[0].func) if extras else None
        name = ast.unparse(annotation)
        found[statement.target.id] = ("node" if name.startswith("vtkMRML") else name, extra)
    return found


def bound_widgets() -> dict[str, tuple[str, str, ElementTree.Element]]:
    """SlicerParameterName -> (widget class, widget name, element) from the .ui file."""
    found = {}
    for widget in ElementTree.parse(UI).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "a dynamic property needs stdset=0"
                found[prop.findtext("string")] = (widget.get("class"), widget.get("name"), widget)
    return found


def test_every_parameter_has_a_supported_widget():
    params, widgets = parameters(), bound_widgets()
    assert set(params) == {"inputA", "inputB", "output", "model", "device", "classify",
                           "metrics", "heatmapOpacity", "emphasis"}
    assert sorted(set(params) - set(widgets)) == [], "parameters without a widget"
    assert sorted(set(widgets) - set(params)) == [], "widgets naming no parameter"
    for name, (kind, extra) in params.items():
        widget_class = widgets[name][0]
        assert widget_class in SUPPORTED[kind], \
            f"{name}: {widget_class} cannot represent {kind} in Slicer 5.6-5.10"
        if extra == "Choice":  # the connector fills the items; free text would be wrong
            assert widget_class == "QComboBox", f"{name}: a Choice needs a QComboBox"
            assert widgets[name][2].find("item") is None, f"{name}: items come from Choice"


def test_node_selectors_offer_the_parameter_class():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef)
               and node.name == "ClinicalFMambaParameterNode")
    node_types = {s.target.id: ast.unparse(s.annotation) for s in cls.body
                  if isinstance(s, ast.AnnAssign) and ast.unparse(s.annotation).startswith("vtkMRML")}
    for name, (_, _, widget) in bound_widgets().items():
        if name in node_types:
            offered = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                       for s in p.iter("string")]
            assert offered == [node_types[name]], name


@pytest.mark.parametrize("label", ["fuseButton", "progressBar", "statusLabel", "verdictLabel",
                                   "probabilitiesView", "sliceVerdictsView", "metricsView",
                                   "emphasisSlider"])
def test_widgets_the_code_uses_exist(label):
    names = {widget.get("name") for widget in ElementTree.parse(UI).iter("widget")}
    assert label in names
    assert f"self.ui.{label}" in MODULE.read_text(encoding="utf-8")
