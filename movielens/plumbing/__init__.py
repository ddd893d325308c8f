"""Where things live on disk, the errors users see, atomic writes."""
