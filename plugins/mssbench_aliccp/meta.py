"""Ali-CCP's source, importable without the loader's dependencies."""

TIANCHI_URL = "https://tianchi.aliyun.com/dataset/408"
