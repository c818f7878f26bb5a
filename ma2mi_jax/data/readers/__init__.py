"""Readers of the official releases (DFEW, FERV39K, AFEW, CASME II, SAMM, MMEW) and their sheets."""
