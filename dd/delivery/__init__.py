"""Receiving a file: place it, fetch it to a temporary name, verify, rename, assemble
parts, run on_file and the plugins (dd_plugins(7)); and the delivering flow that
dd_subscribe and dd_sara share.  Joins the transfers and the broker through dd.flow;
knows nothing of pumps."""
