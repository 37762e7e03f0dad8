"""KuaiRand's source and the two datasets it names, importable without the loader's dependencies."""

KUAIRAND_URL = "https://kuairand.com"
#: Dataset name -> the title KuaiRand gives it.
TITLES = {"kuairand-pure": "KuaiRand-Pure", "kuairand-1k": "KuaiRand-1K"}
