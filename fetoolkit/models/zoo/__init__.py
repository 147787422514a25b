"""The model records, one module per family; importing a module registers its records (no torch).

``fetoolkit.models.registry`` imports every module of this package the first time a model is
looked up, so adding a model family or a release is one module (or one record) here, plus the
builder it names (a ``"module:function"`` that takes keyword arguments) and, if wanted, a
``configs/model/*.yaml``. No list of modules to keep in step.
"""
