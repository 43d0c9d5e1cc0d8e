// CI only (EVCXR_CONFIG_DIR points here): evcxr reports a panicking cell as a message on stderr
// and carries on; aborting turns it into a dead kernel, which the runner counts as a failure.
std::panic::set_hook(Box::new(|info| {
    eprintln!("{info}");
    std::process::abort();
}));
