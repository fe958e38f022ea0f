/* Starts 3 threads that keep waking up, then sleeps argv[1] seconds and exits 0. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *spin(void *arg) {
    for (;;)
        usleep(1000);
    return arg;
}

int main(int argc, char **argv) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, spin, NULL);
    sleep(argc > 1 ? atoi(argv[1]) : 1);
    return 0;
}
