"""Message syntax: header summaries, DSN syntax."""
