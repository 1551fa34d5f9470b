"""VisualShop's ML engine: image I/O, detection, embedding, indexing, evaluation.

Framework-free by design: nothing in this package imports Django. Functions take and
return PIL images, numpy arrays, tensors and dataclasses; the Django apps turn rows into
arrays and back.
"""
