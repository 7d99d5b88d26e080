"""CAM methods, one module each: every module here is imported by
server/explain/methods.py (a package scan), so a new method is one new file that
declares itself with `register_method` (see random_cam.py)."""
