"""Python helpers of meta-didymos (made importable by addpylib in layer.conf)."""
