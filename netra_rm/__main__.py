"""``python -m netra_rm`` behaves exactly like ``netra-rm``."""

from netra_rm.cli import main

if __name__ == "__main__":
    main()
