"""What dd keeps on disk between runs: retry stores, the duplicate store, the log index,
per-configuration state, instance metrics and pid files.  Imports only dd.core."""
