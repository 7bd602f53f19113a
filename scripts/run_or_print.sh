# Sourced by the launch scripts: run_or_print COMMAND... runs it, or with DRY_RUN set prints its words.
run_or_print() {  # the launch command, or with DRY_RUN set its words as a shell would quote them
    if [[ -n "${DRY_RUN:-}" ]]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
}
