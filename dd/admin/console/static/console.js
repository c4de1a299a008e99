// The one script of the console: pages that show live figures reload themselves.
"use strict";
const seconds = Number(document.body.dataset.refresh);
if (seconds > 0) {
    setTimeout(() => window.location.reload(), seconds * 1000);
}
