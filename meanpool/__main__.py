"""``python -m meanpool`` (what ``torchrun ... -m meanpool build`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
