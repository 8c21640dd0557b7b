# The two commands the README promises, for a fresh Debian 12 machine (run as root):
#   make lab    the main job: image, every host up, deployed and checked
#   make test   the test suite (what CI runs, through .ci/run)
SPEC ?= kubelab.yaml
PROVIDER ?= nspawn

.PHONY: setup lab test bench

setup:
	pip install -q -r requirements.txt
	kubelab --spec $(SPEC) host setup

# Containers need only the image's root filesystem; VMs need the libvirt box too.
lab: setup
	kubelab --spec $(SPEC) image build $(if $(filter nspawn,$(PROVIDER)),--rootfs-only)
	kubelab --spec $(SPEC) create --provider $(PROVIDER)

test: setup
	python -m pytest -ra

bench:
	python benchmarks/scale.py
