"""Data sets from outside: public ones fetched and verified, and a synthetic one."""
