# The two commands the README promises, for a fresh Debian 12 machine (run as root):
#   make lab    the main job: image, every host up, deployed and checked
#   make test   the test suite (what CI runs, through .ci/run)
SPEC ?= kubelab.yaml
PROVIDER ?= nspawn

.PHONY: setup lab test bench

setup:
	pip install -q -r requirements.txt
	kubelab --spec $(SPEC) host setup

# Of the local image, containers need the root filesystem, libvirt VMs the box built from
# it too; VirtualBox VMs use the spec's public box.
IMAGE_ARGS_nspawn = --rootfs-only

lab: setup
ifneq ($(PROVIDER),virtualbox)
	kubelab --spec $(SPEC) image build $(IMAGE_ARGS_$(PROVIDER))
endif
	kubelab --spec $(SPEC) create --provider $(PROVIDER)

test: setup
	python -m pytest -ra --durations=15

bench:
	python benchmarks/scale.py
