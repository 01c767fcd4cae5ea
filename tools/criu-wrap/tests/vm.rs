//! Real CRIU on a real kernel, in a VM (scripts/criu-vm.sh).
