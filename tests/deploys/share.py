"""A deploy for tests/test_stages.py: the first storage host publishes a value computed on
it; every storage host then uses it (what kubeadm's join data and Gluster's peer probe need)."""
from pyinfra import host
from pyinfra.api import operation

from tasks import the_lab
from tasks.helpers import chosen, publish, shared

plan, _ = the_lab()
me = next(h for h in plan.hosts if h.fqdn == host.data.fqdn)


@operation()
def use(key):
    yield f"echo using {shared(key)}"


if me.group == "storage":
    publish(name="Publish the pool id", key="pool", command="cat /etc/pool-id",
            chosen_host=chosen(plan, "storage"))
    use(name="Use the pool id", key="pool")
