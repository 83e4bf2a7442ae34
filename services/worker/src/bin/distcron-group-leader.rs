//! `distcron-group-leader __group-leader <worker-pid> <shell> <command>`: the leader of one run's
//! process group (see `distcron_worker::leader`) as a small program of its own. The worker starts
//! it for every run when it is installed next to the worker's executable: it starts in a fraction
//! of the time the worker's own large executable takes, which at hundreds of runs a second is a
//! large share of the machine.

fn main() {
    distcron_worker::leader::run_if_requested();
    eprintln!(
        "usage: distcron-group-leader {} <worker-pid> <shell> <command> (started by the worker)",
        distcron_worker::leader::LEADER_ARG
    );
    std::process::exit(2);
}
