"""The bottom layer: what a notice is and how it is judged, with no network and no threads.

Notices and their wire formats, log messages, the options table and the config
language, credentials, checksums, parts arithmetic, the safe path builder, topics,
routes, outcomes and errors.  Nothing here imports anything of dd above it.
"""
