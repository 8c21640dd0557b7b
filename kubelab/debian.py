"""The Debian release every lab host runs: the image is built from its suite and the VMs'
boxes are named after it, so the image and the boxes cannot disagree."""
SUITE = "trixie"
VERSION = 13
# VirtualBox boots Debian's public box of the release; libvirt the box `kubelab image build`
# makes from the image (kubelab.box).
BOXES = {"virtualbox": f"debian/{SUITE}64", "libvirt": f"kubelab/debian{VERSION}"}
