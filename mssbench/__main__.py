"""``python -m mssbench`` (and ``torchrun -m mssbench run ...``) is the ``mssbench`` command."""

from mssbench.cli import main

if __name__ == "__main__":
    main()
