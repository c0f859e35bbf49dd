"""Background processes: the Dramatiq broker and actors, and the change-stream listener."""
