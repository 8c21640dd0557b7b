# Test harness for `vagrant validate` where VirtualBox is not installed: make its provider
# look installed and usable (as `vagrant validate --ignore-provider` does for every
# provider) while Vagrant still validates the VirtualBox provider's own settings.
Vagrant.plugin("2").manager.providers[:virtualbox][0].class_eval do
  def initialize(machine) end

  def machine_id_changed; end

  def self.installed?
    true
  end

  def self.usable?(raise_error = false)
    true
  end

  def state
    Vagrant::MachineState.new(Vagrant::MachineState::NOT_CREATED_ID, :not_created, :not_created)
  end
end
