//! Session state: what persists between calls and what does not.

use pretty_assertions::assert_eq;

use super::backends;
use super::fixture;
use super::inside;

#[tokio::test]
async fn exports_functions_and_aliases_persist_across_many_calls() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .run("export GREETING='hello world'; greet() { echo \"$GREETING from $1\"; }; alias ll='echo aliased'")
            .await;
        assert_eq!(r.exit_code, 0, "{backend:?}: {}", r.output);
        // hermes loses functions after the first call; check several calls later.
        for _ in 0..3 {
            let r = f.run("greet slotbox; ll").await;
            assert_eq!(
                r.output, "hello world from slotbox\naliased\n",
                "{backend:?}"
            );
        }
    }
}

#[tokio::test]
async fn multi_line_and_quoted_values_survive_the_snapshot() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        f.run("export TRICKY=$'line one\\ndeclare -x INJECTED=1\\n\"quoted\" $dollar'")
            .await;
        let r = f
            .run("printf '%s|' \"$TRICKY\"; echo \"${INJECTED:-absent}\"")
            .await;
        assert_eq!(
            r.output, "line one\ndeclare -x INJECTED=1\n\"quoted\" $dollar|absent\n",
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn unexported_variables_and_shell_options_do_not_persist() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        f.run("LOCAL_ONLY=1; set -e; set -u; set -o pipefail").await;
        let r = f
            .run("echo \"[${LOCAL_ONLY:-}]\"; false; echo still running; echo $-")
            .await;
        assert_eq!(r.exit_code, 0, "{backend:?}: {}", r.output);
        assert!(
            r.output.starts_with("[]\nstill running\n"),
            "{backend:?}: {}",
            r.output
        );
        assert!(
            !r.output.lines().nth(2).unwrap_or("").contains('e'),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn unset_and_unexport_take_effect() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        f.run("export A=1 B=2").await;
        f.run("unset A; export -n B").await;
        let r = f.run("echo \"${A:-none} ${B:-none}\"").await;
        assert_eq!(r.output, "none none\n", "{backend:?}");
    }
}

#[tokio::test]
async fn cd_persists_and_is_reported() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let ws = inside(&f);
        let r = f.run("mkdir -p sub/deeper && cd sub/deeper").await;
        assert_eq!(r.cwd, format!("{ws}/sub/deeper"), "{backend:?}");
        let r = f.run("pwd").await;
        assert_eq!(r.output, format!("{ws}/sub/deeper\n"), "{backend:?}");
        assert_eq!(f.session.cwd(), format!("{ws}/sub/deeper"));
    }
}

#[tokio::test]
async fn early_exit_and_failed_cd_leave_state_unchanged() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let ws = inside(&f);
        let r = f.run("export KEPT=1; cd /usr; export LOST=1; exit 5").await;
        assert_eq!(r.exit_code, 5, "{backend:?}");
        assert_eq!(r.cwd, ws, "{backend:?}");
        let r = f.run("cd /definitely/not/here").await;
        assert_eq!(r.exit_code, 1, "{backend:?}");
        assert!(
            r.output.contains("No such file or directory"),
            "{}",
            r.output
        );
        let r = f.run("pwd; echo \"${KEPT:-no}${LOST:-no}\"").await;
        assert_eq!(r.output, format!("{ws}\nnono\n"), "{backend:?}");
    }
}

#[tokio::test]
async fn cwd_with_spaces_or_leading_dash_works() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let ws = inside(&f);
        f.run("mkdir -p 'with space/-dash' && cd 'with space' && cd -- -dash")
            .await;
        let r = f.run("pwd").await;
        assert_eq!(r.output, format!("{ws}/with space/-dash\n"), "{backend:?}");
        assert_eq!(r.cwd, format!("{ws}/with space/-dash"));
    }
}

#[tokio::test]
async fn deleted_cwd_falls_back_to_nearest_existing_ancestor() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let ws = inside(&f);
        f.run("mkdir -p a/b/c && cd a/b/c").await;
        let r = f.run("rm -rf ../../b; echo removed").await;
        assert_eq!(r.output, "removed\n");
        let r = f.run("pwd").await;
        assert_eq!(r.exit_code, 0, "{backend:?}");
        assert_eq!(r.output, format!("{ws}/a\n"), "{backend:?}");
        assert_eq!(r.cwd, format!("{ws}/a"));
    }
}

#[tokio::test]
async fn output_has_no_marker_residue() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f.run("printf abc").await;
        assert_eq!(r.output, "abc", "{backend:?}");
        let r = f.run("true").await;
        assert_eq!(r.output, "", "{backend:?}");
    }
}

#[tokio::test]
async fn functions_shadowing_builtins_do_not_break_the_session() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        f.run("cd() { echo hijacked; }; pwd() { echo hijacked; }; eval() { echo hijacked; }")
            .await;
        let r = f.run("mkdir -p x; builtin cd x; echo ok").await;
        assert_eq!(r.output, "ok\n", "{backend:?}");
        assert!(r.cwd.ends_with("/x"), "{backend:?}: {}", r.cwd);
    }
}

#[tokio::test]
async fn login_profile_exports_are_in_the_snapshot() {
    // The profile is read once, at session start, by a login shell.
    for backend in backends().await {
        let workspace = tempfile::tempdir().unwrap();
        std::fs::write(
            workspace.path().join(".profile"),
            "export FROM_PROFILE=yes\nprofile_fn() { echo fn-ok; }\n",
        )
        .unwrap();
        let backend = super::at(&backend, workspace.path());
        let mut config = slotbox_exec::SessionConfig::new(backend.clone(), workspace.path());
        if backend == slotbox_exec::Backend::Local
            || matches!(backend, slotbox_exec::Backend::Ssh(_))
        {
            // Under bwrap HOME is the workspace already; locally point it there explicitly.
            config.env = config.env.set("HOME", workspace.path().to_str().unwrap());
        }
        let mut session = slotbox_exec::Session::start(config).await.unwrap();
        let r = session
            .exec(&slotbox_exec::ExecRequest::new(
                "echo $FROM_PROFILE; profile_fn",
            ))
            .await
            .unwrap();
        assert_eq!(r.output, "yes\nfn-ok\n");
    }
}
