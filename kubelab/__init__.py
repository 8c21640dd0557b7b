"""kubelab: one spec file -> a running, highly available Kubernetes lab on local hosts."""
