"""Small helpers with no home of their own: files (`fs`) and lazy package exports (`lazy`)."""
