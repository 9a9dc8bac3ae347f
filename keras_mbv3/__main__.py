import sys

from keras_mbv3.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main())
