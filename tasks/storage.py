"""The GlusterFS trusted pool on the storage hosts. So far: their packages."""

NAME = "Storage"
GROUPS = ("storage",)
PACKAGES = ["glusterfs-server", "glusterfs-client", "xfsprogs", "thin-provisioning-tools",
            "fuse3"]


def files_for(plan, me, secrets):
    return {}
