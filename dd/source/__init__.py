"""The source's side: a file on disk turned into its notices, and the changes below
watched directories (dd_post and dd_watch)."""
