"""Distiller: knowledge distillation from a teacher model into a smaller student.

``component.Distiller`` (TFX component), ``config.DistillerConfig`` (its typed config),
``distiller.distill`` (the core, no TFX), ``student`` (how the student is built) and
``distill`` (the loss and the training model).
"""
